#!/usr/bin/env bash
# The SLURM profile for real: a single-node SLURM cluster on loopback runs the smoke DAG.
#
#   tests/slurm/run.sh            (as root on Debian/Ubuntu; installs slurm-wlm and munge if missing)
#
# Brings up munged, slurmctld and slurmd from a slurm.conf written for this machine, submits
# `snakemake all --profile profiles/slurm` with config/smoke.yaml (outputs moved to a scratch folder,
# partition `cpu`), checks that every job ran as a SLURM job and that every result and figure exists,
# then stops the daemons it started. There is no accounting database: the executor plugin is told
# to read job states from squeue (`--slurm-status-command squeue`), which sees finished jobs for
# MinJobAge seconds. The node declares the CPUs and memory the profile asks for (SlurmdParameters=
# config_overrides), so the profile's resources are submitted unchanged. The daemons' state and logs
# stay in the scratch folder; only /etc/slurm/slurm.conf (marked as ours) is written outside it.
#
# Environment: LENGTHGEN_SLURM_DIR (scratch folder; default a new one under TMPDIR), PYTHON
# (default .venv/bin/python), KEEP=1 leaves the cluster running.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
WORK=${LENGTHGEN_SLURM_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/lengthgen-slurm.XXXXXX")}
WORK=$(cd "$WORK" && pwd)
chmod 755 "$WORK"  # munged runs as user munge and keeps its files below
export PATH="$(dirname "$PYTHON"):$PATH"
START=$(date +%s)

log() { echo "[slurm-test $(($(date +%s) - START))s] $*"; }
die() { echo "slurm-test: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it starts munged, slurmctld and slurmd)"
command -v snakemake >/dev/null || die "snakemake not found next to $PYTHON (pip install -e .[workflow])"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# ---------------------------------------------------------------------------- munge
MUNGE=$WORK/munge
mkdir -p "$MUNGE"
chown munge: "$MUNGE" && chmod 700 "$MUNGE"
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge: /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge && chown munge: /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- munged --pid-file="$MUNGE/munged.pid" --log-file="$MUNGE/munged.log" \
        --seed-file="$MUNGE/munged.seed"
    STARTED_MUNGE=1
fi
munge -n </dev/null | unmunge >/dev/null || die "munge does not work: see $MUNGE/munged.log"

# ---------------------------------------------------------------------------- slurm
# At the default path: srun inside a batch job (the jobstep executor) reads /etc/slurm/slurm.conf.
HOST=$(hostname -s)
export SLURM_CONF=/etc/slurm/slurm.conf
MARK="# written by lengthgen tests/slurm/run.sh"
if [ -e "$SLURM_CONF" ] && ! grep -qx "$MARK" "$SLURM_CONF"; then
    die "$SLURM_CONF exists and is not ours: run this test on a machine without a SLURM setup"
fi
mkdir -p /etc/slurm "$WORK/state" "$WORK/spool"
cat >"$SLURM_CONF" <<EOF
$MARK
ClusterName=lengthgen-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=16 RealMemory=262144 State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

stop() {
    local rc=$?
    if [ "${KEEP:-0}" != 1 ]; then
        for pidfile in "$WORK/slurmd.pid" "$WORK/slurmctld.pid"; do
            [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
        done
        if [ -n "${STARTED_MUNGE:-}" ] && [ -s "$MUNGE/munged.pid" ]; then
            kill "$(cat "$MUNGE/munged.pid")" 2>/dev/null || true
        fi
    fi
    [ $rc = 0 ] || echo "slurm-test: failed; daemon logs in $WORK (slurmctld.log, slurmd.log)" >&2
}
trap stop EXIT

log "starting slurmctld and slurmd ($SLURM_CONF)"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
    state=$(sinfo -h -N -o %t 2>/dev/null | head -n 1 || true)
    [ "$state" = idle ] && break
    sleep 1
done
[ "$state" = idle ] || die "node not idle after 60 s (state '$state'); see $WORK/slurmd.log"
srun -p cpu -n 1 true || die "srun on the test cluster failed; see $WORK/slurmctld.log"
log "cluster up: $(sinfo -h -o '%P %D %c %m %t')"

# ---------------------------------------------------------------------------- the smoke DAG
CONFIG=$WORK/smoke.yaml
"$PYTHON" - "$CONFIG" "$WORK" <<'EOF'
import sys
from pathlib import Path

import yaml

out, work = Path(sys.argv[1]), sys.argv[2]
cfg = yaml.safe_load(Path("config/smoke.yaml").read_text())
cfg["data"]["root"] = f"{work}/data"
cfg["study"].update(name="slurm-test", runs_dir=f"{work}/runs", results_dir=f"{work}/results",
                    figures_dir=f"{work}/figures", notebooks_dir=f"{work}/notebooks")
out.write_text(yaml.safe_dump(cfg))
EOF

log "submitting the smoke DAG through profiles/slurm"
snakemake all --profile profiles/slurm --configfile "$CONFIG" --jobs 4 \
    --slurm-status-command squeue --slurm-no-account --slurm-init-seconds-before-status-checks 2 \
    --slurm-logdir "$WORK/slurm-logs" --slurm-keep-successful-logs --default-resources gpu=0 mem_mb=2000 runtime=60 cpus_per_task=1 \
    slurm_partition=cpu >"$WORK/snakemake.log" 2>&1 || { tail -n 60 "$WORK/snakemake.log"; die "snakemake failed"; }

# ---------------------------------------------------------------------------- checks
"$PYTHON" - "$CONFIG" "$WORK" <<'EOF'
import sys
from pathlib import Path

import yaml

sys.path.insert(0, "workflow/scripts")
import study as studylib  # noqa: E402
from lengthgen.results import read_result  # noqa: E402

cfg, work = yaml.safe_load(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
s = studylib.load(cfg)
missing = [p for p in s.all_runs() + s.all_results() if not Path(p).exists()]
missing += [o for fig in studylib.FIGURES for o in s.figure_outputs(fig) if not Path(o).exists()]
assert not missing, f"missing after the SLURM run: {missing}"
for path in s.all_results():
    read_result(path)
logs = list((work / "slurm-logs").rglob("*.log"))
n = len(s.all_runs()) + len(s.all_results()) + len(studylib.FIGURES) + 1  # + prepare_data
assert len(logs) >= n, f"{len(logs)} SLURM job logs for {n} jobs"
print(f"slurm-test: {len(logs)} SLURM jobs; {len(s.all_runs())} runs, {len(s.all_results())} results, "
      f"{len(studylib.FIGURES)} notebooks present")
EOF
log "passed (outputs in $WORK)"
