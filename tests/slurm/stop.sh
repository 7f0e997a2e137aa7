#!/usr/bin/env bash
# Stop the single-node Slurm of tests/slurm/start.sh (jobs cancelled, daemons ended).
set -u
scancel --user="$(id -un)" 2>/dev/null
for d in slurmd slurmctld slurmdbd; do pkill -x "$d" 2>/dev/null; done
mariadb-admin shutdown 2>/dev/null
pkill -x munged 2>/dev/null
for _ in $(seq 40); do
  pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || pgrep -x slurmdbd >/dev/null || \
    pgrep -x mariadbd >/dev/null || pgrep -x munged >/dev/null || break
  sleep 0.5
done
echo "slurm: stopped"
