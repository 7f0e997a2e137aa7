#!/usr/bin/env bash
# Install (Debian packages) and start a single-node Slurm with accounting on this machine, for the tests
# marked `slurm` (tests/test_slurm.py). Needs root. Idempotent: returns at once when Slurm already answers.
# Stop it with tests/slurm/stop.sh. Prints the seconds it took on its last line.
#
#   munged -> mariadb -> slurmdbd -> slurmctld -> slurmd, all as plain daemons (no systemd):
#   proctrack/linuxproc and task/none need no cgroups; partition `debug` (the default) holds this machine,
#   `short` too with a 1-minute limit (for the refused-request test); cred_expire=10 lets a requeued job
#   start again after 10 s instead of 120 s.
set -euo pipefail
start=$(date +%s)
say() { echo "slurm: $*"; }
up() { timeout 10 sinfo -h -p debug -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; }
if pgrep -x slurmctld >/dev/null && up; then
  say "already running ($(sinfo -h -p debug -o '%P %D %c %m %t'))"; exit 0
fi
[ "$(id -u)" = 0 ] || { say "needs root (apt-get and the daemons); run: sudo $0"; exit 1; }

pkgs="slurm-wlm munge slurmdbd mariadb-server"
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
  for try in 1 2 3; do
    if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null; then break; fi
    [ $try = 3 ] && { say "apt-get install $pkgs failed"; exit 1; }
    sleep 5
  done
fi
say "packages ready after $(( $(date +%s) - start )) s"

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) * 9 / 10 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /run/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=benchci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MessageTimeout=30
KillWait=10
MinJobAge=600
JobRequeue=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=short Nodes=$host MaxTime=1 State=UP
CONF
cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
chmod 600 /etc/slurm/slurmdbd.conf

# munge: one key, the daemon as its own user
[ -s /etc/munge/munge.key ] || (umask 077; dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none)
chown munge:munge /etc/munge/munge.key /run/munge; chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null || { say "munge does not work"; exit 1; }

# mariadb, with the accounting database
mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld
[ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
if ! mariadb-admin ping >/dev/null 2>&1; then
  (mariadbd --user=mysql >/var/log/slurm/mariadb.log 2>&1 &)
  for _ in $(seq 60); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

pgrep -x slurmdbd >/dev/null || slurmdbd
for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
sacctmgr -i -Q add cluster benchci >/dev/null 2>&1 || true
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 120); do up && break; sleep 0.5; done
if ! up; then
  say "did not come up; logs in /var/log/slurm/"; tail -5 /var/log/slurm/*.log; exit 1
fi
say "running: $(sinfo -h -p debug -o 'partition %P, %D node, %c CPUs, %m MB, %t') — started in $(( $(date +%s) - start )) s"
