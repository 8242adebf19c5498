#!/usr/bin/env bash
# A real single-node Slurm (Debian's slurm-wlm 22.05) for the tests: install | start | stop | status | env.
#
#   slurm/testcluster.sh install    apt-get install slurm-wlm munge slurmdbd, when missing
#   slurm/testcluster.sh start      configure under $NOTES_TUI_TESTCLUSTER (default /tmp/notes-tui-slurm) and start
#                                   munged, slurmdbd (on the local MariaDB; skipped if it cannot come up),
#                                   slurmctld and slurmd; prints the line to eval: export SLURM_CONF=…
#   slurm/testcluster.sh stop       cancel every job, wait for the queue to empty, stop the daemons it started
#                                   (by their pid files, nothing else)
#
# As root, SlurmUser=root and SlurmdUser=root; munged has its own key and socket, so a site's munge is untouched.
# One node named after `hostname -s` with this machine's CPUs and memory, one partition `debug`, ClusterName gpu
# (the SOP's `-M gpu`). Nothing outside the directory is written but the accounting database notes_tui_slurm_acct.
set -euo pipefail

DIR="${NOTES_TUI_TESTCLUSTER:-/tmp/notes-tui-slurm}"
CONF="$DIR/etc/slurm.conf"
SOCKET="$DIR/munge/munge.socket.2"
NODE="$(hostname -s)"
CLUSTER=gpu
CTLD_PORT="${NOTES_TUI_SLURMCTLD_PORT:-16817}"
SLURMD_PORT="${NOTES_TUI_SLURMD_PORT:-16818}"
DBD_PORT="${NOTES_TUI_SLURMDBD_PORT:-16819}"
ACCT_DB=notes_tui_slurm_acct

say() { echo "testcluster: $*" >&2; }

install() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v slurmdbd >/dev/null; then
        return 0
    fi
    say "installing slurm-wlm, slurmdbd and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge >/dev/null
}

running() {  # running PIDFILE: the daemon this script started is alive
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS COMMAND...: until the command succeeds
    local limit=$1; shift
    for _ in $(seq 1 $((limit * 10))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

mysql_up() {
    command -v mysql >/dev/null && mysql --protocol=tcp -h 127.0.0.1 -u root -e "SELECT 1" >/dev/null 2>&1
}

configure() {
    mkdir -p "$DIR"/{etc,state,spool,log,run,munge}
    chmod 700 "$DIR/munge"
    if [ ! -s "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 600 "$DIR/munge/munge.key"
    fi
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))  # leave 1 GB to the machine
    local accounting="AccountingStorageType=accounting_storage/none"
    if [ "${1:-}" = dbd ]; then
        accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$NODE
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$SOCKET"
    fi
    cat >"$CONF" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
JobAcctGatherType=jobacct_gather/none
$accounting
ReturnToService=2
KillWait=5
MinJobAge=60
InactiveLimit=0
DefMemPerCPU=256
NodeName=$NODE CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$SOCKET
DbdHost=$NODE
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=root
StorageLoc=$ACCT_DB
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
}

start_munged() {
    running "$DIR/munge/munged.pid" && return 0
    munged --force --socket="$SOCKET" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
    wait_for 10 test -S "$SOCKET" || { say "munged did not start: see $DIR/munge/munged.log"; return 1; }
}

start_dbd() {  # slurmdbd on the local MariaDB: -M needs it; 0 when it answers
    mysql_up || { say "no MariaDB on 127.0.0.1:3306: no slurmdbd (-M cannot be tested)"; return 1; }
    if ! running "$DIR/run/slurmdbd.pid"; then
        SLURM_CONF="$CONF" slurmdbd || return 1  # reads slurmdbd.conf beside $SLURM_CONF
    fi
    if ! wait_for 20 env SLURM_CONF="$CONF" sacctmgr -n -P list cluster; then
        say "slurmdbd does not answer: see $DIR/log/slurmdbd.log"
        return 1
    fi
    SLURM_CONF="$CONF" sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
}

start() {
    install
    configure none
    start_munged
    local mode=plain
    if [ "${NOTES_TUI_SLURMDBD:-1}" = 1 ] && configure dbd && start_dbd; then
        mode=dbd
    else
        configure none
    fi
    export SLURM_CONF="$CONF"
    if ! running "$DIR/run/slurmctld.pid"; then
        slurmctld -f "$CONF" || { say "slurmctld did not start: see $DIR/log/slurmctld.log"; return 1; }
    fi
    if ! running "$DIR/run/slurmd.pid"; then
        slurmd -f "$CONF" || { say "slurmd did not start: see $DIR/log/slurmd.log"; return 1; }
    fi
    if ! wait_for 30 sh -c "sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'"; then
        say "the node did not come up: see $DIR/log/slurmctld.log and slurmd.log"
        sinfo -N >&2 || true
        return 1
    fi
    echo "$mode" >"$DIR/run/mode"
    say "up ($mode): node $NODE, $(nproc) CPUs, cluster $CLUSTER"
    echo "export SLURM_CONF=$CONF"
}

stop() {
    [ -f "$CONF" ] || return 0
    export SLURM_CONF="$CONF"
    if running "$DIR/run/slurmctld.pid"; then
        scancel --user=root --full 2>/dev/null || true
        wait_for 60 sh -c '[ -z "$(squeue -h -o %i)" ]' || say "jobs still in the queue after 60 s"
    fi
    local pidfile
    for pidfile in "$DIR/run/slurmd.pid" "$DIR/run/slurmctld.pid" "$DIR/run/slurmdbd.pid" "$DIR/munge/munged.pid"; do
        if running "$pidfile"; then
            local pid
            pid=$(cat "$pidfile")
            kill -TERM "$pid"
            wait_for 20 sh -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
    say "stopped"
}

status() {
    [ -f "$CONF" ] || { say "not configured"; return 1; }
    local pidfile state=0
    for pidfile in "$DIR/munge/munged.pid" "$DIR/run/slurmdbd.pid" "$DIR/run/slurmctld.pid" "$DIR/run/slurmd.pid"; do
        if running "$pidfile"; then say "$(basename "$pidfile" .pid) runs (pid $(cat "$pidfile"))"
        else say "$(basename "$pidfile" .pid) is not running"; [ "$pidfile" = "$DIR/run/slurmdbd.pid" ] || state=1; fi
    done
    return $state
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
