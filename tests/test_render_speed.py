"""The render-speed paths (stages/featurevis/speed.py, stages/render/tune.py, compile_cache.py, the fused
jitter crop) give the plain path's result, on the real MobileNetV2."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from stages.featurevis.forward import imagenet_normalize, layer_forward
from stages.featurevis.objectives import AtlasDirection
from stages.featurevis.optimize import render
from stages.featurevis.param import FourierImage
from stages.featurevis.speed import Speed, fast_layer_forward, truncate
from stages.featurevis.transforms import Jitter, Pad, RandomScaleRotate, crop_or_pad, reference_transforms
from stages.render import compile_cache, tune
from tests.featurevis_fixtures import LAYER, mobilenet, one_thread  # noqa: F401 - pytest fixtures

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _directions(n: int) -> torch.Tensor:
    return torch.rand(n, 576, generator=torch.Generator().manual_seed(0))


def _render(model, speed: Speed, *, cpu_bf16: bool = False, steps: int = 20, size: int = 48):
    with fast_layer_forward(model, LAYER, speed=speed) as (forward, fast):
        return render(
            forward,
            AtlasDirection(LAYER, _directions(2), cos_power=4),
            FourierImage(2, (size, size)),
            steps=steps,
            device=CPU,
            seed=1,
            fast_forward=fast,
            cpu_bf16=cpu_bf16,
            relu_redirect_steps=4,
        )


def test_the_cut_network_is_the_hooked_forward_bit_for_bit(mobilenet):
    plain = _render(mobilenet, Speed(truncate=False))
    cut = _render(mobilenet, Speed())
    assert (plain.images == cut.images).all() and (plain.objective == cut.objective).all()
    assert plain.objective.mean() > plain.initial_objective.mean()  # the render did something


def test_the_cut_stops_at_the_layer(mobilenet):
    cut = truncate(mobilenet, LAYER)
    assert cut is not None
    names = {name for name, _ in cut.named_modules()}
    assert LAYER in names and "features.12" in names
    assert not any(n.startswith(("classifier", "features.14", "features.18", f"{LAYER[:-1]}1")) for n in names)
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), layer_forward(mobilenet, LAYER) as hooked:
        want = hooked(x)[LAYER]
    with torch.no_grad():
        assert torch.equal(cut(imagenet_normalize(x)), want)  # the cut takes the model's input


class _TwoBranches(nn.Module):
    """A block whose forward runs a side branch before the target branch (as an Inception block does)."""

    def __init__(self, side: nn.Module, target: nn.Module) -> None:
        super().__init__()
        self.side, self.target = side, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.side(x), self.target(x)], dim=1)


def test_the_cut_removes_a_branch_beside_the_layer(mobilenet):
    model = _TwoBranches(mobilenet.features[0], copy.deepcopy(mobilenet.features[0])).eval()  # real weights
    calls: list[int] = []
    handle = model.side.register_forward_hook(lambda *_: calls.append(1))
    x = torch.rand(1, 3, 16, 16)
    try:
        with torch.no_grad(), layer_forward(model, "target") as hooked:
            hooked(x)
        assert calls == [1]  # the hooks stop after the layer, but the side branch ran before it
        with torch.no_grad(), fast_layer_forward(model, "target") as (_, fast):
            calls.clear()
            out = fast(x)["target"]
        assert calls == [] and out.shape == (1, 32, 8, 8)
    finally:
        handle.remove()


def test_an_untraceable_model_keeps_the_hooks(mobilenet):
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = mobilenet.features[0]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) if x.mean() > 0 else self.conv(-x)

    model = DataDependent().eval()
    assert truncate(model, "conv") is None
    with fast_layer_forward(model, "conv", speed=Speed(channels_last=True)) as (forward, fast):
        assert forward is fast and forward(torch.rand(1, 3, 16, 16))["conv"].shape == (1, 32, 8, 8)


def test_channels_last_gives_the_plain_objective(mobilenet):
    # A few steps: over many, float32 rounding differences grow as any two optimisations' would.
    plain = _render(mobilenet, Speed(truncate=False), steps=6)
    fast = _render(mobilenet, Speed(channels_last=True), steps=6)
    assert abs(fast.objective - plain.objective).max() <= 1e-3 * abs(plain.objective).max()
    assert all(p.is_contiguous() for p in mobilenet.parameters())  # the model itself is untouched


def test_cpu_bf16_autocast_gives_the_plain_objective_within_its_precision(mobilenet):
    plain = _render(mobilenet, Speed(truncate=False))
    bf16 = _render(mobilenet, Speed(), cpu_bf16=True)
    assert abs(bf16.objective - plain.objective).max() <= 0.1 * abs(plain.objective).max()
    assert (bf16.images != plain.images).any()  # it really ran in another precision


def test_fused_jitters_are_the_jitters_one_by_one():
    x = torch.rand(3, 3, 40, 40, requires_grad=True)
    weights = torch.rand(3, 3, 40, 40)
    chain = reference_transforms()
    got = chain(x, torch.Generator().manual_seed(5))
    (g_got,) = torch.autograd.grad((got * weights).sum(), x)
    generator = torch.Generator().manual_seed(5)
    y = x
    for t in (Pad(16), Jitter(4), Jitter(4), Jitter(8), Jitter(8), Jitter(8), RandomScaleRotate(), Jitter(2)):
        y = t(y, generator)  # one at a time: no fusion
    want = crop_or_pad(y, (40, 40))
    (g_want,) = torch.autograd.grad((want * weights).sum(), x)
    assert torch.equal(got, want) and torch.equal(g_got, g_want)


def test_tune_measures_once_and_records_its_choice(mobilenet, tmp_path, monkeypatch):
    path = tmp_path / "tune.json"
    with fast_layer_forward(mobilenet, LAYER) as (forward, _):
        choice = tune.tuned(forward, LAYER, 32, 4, CPU, "mobilenet|test", path=path)
        assert choice.batch in (4,) and 1 <= choice.threads <= os.cpu_count()
        record = json.loads(path.read_text())
        assert [v["batch"] for v in record.values()] == [choice.batch]
        monkeypatch.setattr(tune, "measure", lambda *a, **k: pytest.fail("measured again"))
        assert tune.tuned(forward, LAYER, 32, 4, CPU, "mobilenet|test", path=path) == choice
    assert torch.get_num_threads() == 1  # measuring other thread counts gave the setting back


def test_tune_candidates_cover_threads_and_batches():
    pairs = tune.candidates(CPU, 40)
    assert {b for _, b in pairs} == {8, 16, 32, 40}
    assert {t for t, _ in pairs} == set(range(1, len(os.sched_getaffinity(0)) + 1))


def test_tuned_threads_give_the_plain_objective(mobilenet):
    plain = _render(mobilenet, Speed(truncate=False), steps=6, size=32)
    torch.set_num_threads(2)  # the one_thread fixture restores it
    two = _render(mobilenet, Speed(), steps=6, size=32)
    assert abs(two.objective - plain.objective).max() <= 1e-3 * abs(plain.objective).max()


def test_compile_cache_folder_follows_the_user_then_the_project(tmp_path, monkeypatch):
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
    assert compile_cache.configure() == tmp_path / "mine"
    monkeypatch.delenv(compile_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.configure() == tmp_path / "xdg" / "activation-atlas" / "inductor"
    assert os.environ[compile_cache.ENV] == str(tmp_path / "xdg" / "activation-atlas" / "inductor")


_COMPILE_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    sys.path.insert(0, {repo!r})
    from torch._dynamo.utils import counters
    from stages.featurevis.speed import Speed, fast_layer_forward
    from stages.render import compile_cache
    from tests.featurevis_fixtures import load_mobilenet_v2
    torch.set_num_threads(1)
    folder = compile_cache.configure()
    model = torch.nn.Sequential(load_mobilenet_v2().features[0]).eval()  # a tiny slice, real weights
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    with fast_layer_forward(model, "0", speed=Speed(compile=True)) as (eager, fast):
        got = fast(x)["0"]
        got.square().sum().backward(inputs=[x])
        grad = x.grad.clone()
        x.grad = None
        want = eager(x)["0"]
        want.square().sum().backward(inputs=[x])
    print(json.dumps({{
        "folder": str(folder),
        "hits": counters["inductor"]["fxgraph_cache_hit"],
        "misses": counters["inductor"]["fxgraph_cache_miss"],
        "error": float((got - want).abs().max()), "grad_error": float((grad - x.grad).abs().max()),
    }}))
    """
)


def test_compile_matches_eager_and_a_second_process_hits_the_disk_cache(tmp_path):
    script = tmp_path / "compile_once.py"
    script.write_text(_COMPILE_SCRIPT.format(repo=str(REPO)))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop(compile_cache.ENV, None)

    def run() -> dict:
        done = subprocess.run(
            [sys.executable, str(script)], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = run()
    folder = tmp_path / "xdg" / "activation-atlas" / "inductor"
    assert first["folder"] == str(folder) and first["misses"] > 0 and first["hits"] == 0
    assert any((folder / "fxgraph").rglob("*")), "nothing written to the on-disk FX graph cache"
    assert first["error"] < 1e-4 and first["grad_error"] < 1e-3
    second = run()
    assert second["hits"] > 0 and second["misses"] == 0
