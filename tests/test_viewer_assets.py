"""The viewer's static files and ``atlas serve``, without a browser (tests/test_viewer_browser.py has one)."""

from __future__ import annotations

import fnmatch
import re
import socket
import tomllib
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.serve import make_server, serve_in_thread
from stages.tiles.viewer_assets import VIEWER_SOURCE, install_viewer
from store.errors import AtlasError

ROOT = Path(__file__).resolve().parents[1]
DZI = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
    'Format="jpg" Overlap="1" TileSize="256">\n  <Size Width="512" Height="512"/>\n</Image>\n'
)


class _References(HTMLParser):
    """Every src/href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [value for name, value in attrs if name in ("src", "href") and value]


def _refs(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.refs


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    """A minimal export folder: the viewer plus one .dzi, one cells.js and one .json."""
    install_viewer(tmp_path)
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "level_4.dzi").write_text(DZI)
    (tmp_path / "atlases.json").write_text('{"atlases": []}')
    (tmp_path / "atlases.js").write_text('window.ATLAS_INDEX = {"atlases": []};\n')
    return tmp_path


def test_install_viewer_copies_the_page_vendored_library_and_license(tmp_path: Path) -> None:
    index = install_viewer(tmp_path / "atlas")
    assert index == tmp_path / "atlas" / "index.html" and index.is_file()
    osd = tmp_path / "atlas" / "viewer" / "openseadragon"
    assert (osd / "openseadragon.min.js").read_text()[:60].startswith("//! openseadragon 6.1.1")
    assert "BSD" in (osd / "LICENSE.txt").read_text() or "Redistribution" in (osd / "LICENSE.txt").read_text()
    assert (osd / "images" / "zoomin_rest.png").is_file()  # the navigation buttons prefixUrl points at
    assert not list(osd.glob("*.map")), "source maps are not shipped into exports"
    # every local file the page references is in the export
    for ref in _refs(index.read_text()):
        if not ref.startswith("data:") and ref != "atlases.js":  # atlases.js is written by the exporter
            assert (index.parent / ref).is_file(), ref


def test_reinstall_replaces_the_viewer_folder_and_keeps_atlas_data(tmp_path: Path) -> None:
    install_viewer(tmp_path)
    (tmp_path / "viewer" / "stale.js").write_text("old viewer version")
    (tmp_path / "atlases.js").write_text("window.ATLAS_INDEX = {};")
    install_viewer(tmp_path)
    assert not (tmp_path / "viewer" / "stale.js").exists()
    assert (tmp_path / "atlases.js").read_text() == "window.ATLAS_INDEX = {};"


def test_viewer_is_offline_and_file_url_safe() -> None:
    """No http(s) URL in the page; no XHR/fetch anywhere in our scripts (Chromium blocks them on file://)."""
    html = (VIEWER_SOURCE / "index.html").read_text()
    assert not re.search(r"https?://", html)
    assert all(not ref.startswith("//") for ref in _refs(html))
    for script in (VIEWER_SOURCE / "viewer").glob("*.js"):
        code = script.read_text()
        assert "XMLHttpRequest" not in code and not re.search(r"\bfetch\s*\(", code), script.name
        assert not re.search(r"https?://", code), script.name


def test_package_data_ships_every_viewer_file() -> None:
    """pyproject's package-data globs cover every file under stages/tiles/viewer/ (so pip installs it)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "stages.tiles"
    ]
    files = [p.relative_to(VIEWER_SOURCE.parent).as_posix() for p in VIEWER_SOURCE.rglob("*") if p.is_file()]
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns) and not f.endswith(".map")]
    assert files and not missing, missing


def test_serve_gives_the_export_files_with_their_content_types(export: Path) -> None:
    server, url = serve_in_thread(export, port=0)
    try:

        def get(path: str) -> tuple[str, bytes]:
            with urllib.request.urlopen(url + path, timeout=60) as response:
                assert response.status == 200
                return response.headers.get_content_type(), response.read()

        kind, body = get("")
        assert kind == "text/html" and b'id="picker"' in body
        assert get("main/level_4.dzi") == ("application/xml", DZI.encode())
        assert get("atlases.js")[0] == "text/javascript"
        assert get("atlases.json")[0] == "application/json"
        assert get("viewer/viewer.css")[0] == "text/css"
        with pytest.raises(urllib.error.HTTPError) as missing:
            get("../pyproject.toml")
        assert missing.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_serve_never_follows_a_link_out_of_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "secrets").mkdir(parents=True)
    (outside / "secret.txt").write_text("outside")
    (outside / "secrets" / "key.txt").write_text("outside too")
    atlas = tmp_path / "atlas"
    (atlas / "main").mkdir(parents=True)
    (atlas / "index.html").write_text("<html>atlas</html>")
    (atlas / "main" / "inside.json").write_text("{}")
    (atlas / "leak.txt").symlink_to(outside / "secret.txt")
    (atlas / "leakdir").symlink_to(outside / "secrets")
    (atlas / "main" / "up").symlink_to(tmp_path)
    (atlas / "alias.json").symlink_to(atlas / "main" / "inside.json")  # a link that stays inside is fine
    served = tmp_path / "served"  # the root itself reached through a link: still served
    served.symlink_to(atlas)
    server, url = serve_in_thread(served, port=0)
    try:

        def status(path: str) -> int:
            try:
                with urllib.request.urlopen(url + path, timeout=30) as response:
                    response.read()
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert status("index.html") == 200 and status("alias.json") == 200 and status("main/inside.json") == 200
        for path in (
            "leak.txt",
            "leakdir/key.txt",
            "leakdir/",
            "main/up/outside/secret.txt",
            "main/up/outside/",
            "main/..%2F..%2Foutside/secret.txt",
            "%2e%2e/outside/secret.txt",
        ):
            assert status(path) == 404, path
    finally:
        server.shutdown()
        server.server_close()


def test_serve_refuses_a_folder_without_index_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(AtlasError, match="no index.html"):
        make_server(tmp_path, port=0)
    assert main(["serve", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atlas serve: error:") and "index.html" in err and "\n" not in err


def test_serve_says_which_port_is_taken(export: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(AtlasError, match=f"port {port} .* in use; pick another with --port"):
            make_server(export, port=port)
