"""The CLI's sub-commands, one module per family; `pipeline.cli` only parses and dispatches."""
