#!/usr/bin/env bash
# The whole atlas as four SLURM jobs chained with --dependency=afterok: each starts only when every
# task of the previous one succeeded (an array job is "ok" when all its tasks are). Run from the
# repository root, with params.yaml saying which images, model and layer:
#   bash docs/cluster/submit_chain.sh
# If a task failed, the chain stops there: `atlas status` names the missing shard; resubmit just
# that task (sbatch --array=<i> docs/cluster/collect_array.sbatch) and the rest of the chain.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p logs
collect=$(sbatch --parsable docs/cluster/collect_array.sbatch)
layout=$(sbatch --parsable --dependency="afterok:${collect}" docs/cluster/reduce_grid.sbatch)
render=$(sbatch --parsable --dependency="afterok:${layout}" docs/cluster/render_array.sbatch)
tiles=$(sbatch --parsable --dependency="afterok:${render}" docs/cluster/tiles_array.sbatch)
echo "submitted: collect ${collect} -> reduce/grid ${layout} -> render ${render} -> tiles ${tiles}"
