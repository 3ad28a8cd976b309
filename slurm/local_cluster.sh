#!/usr/bin/env bash
# A real two-node SLURM cluster (22.05, Debian packages) on this one machine, for stvideo's tests and for
# trying tools/submit.py without a cluster. Two slurmd daemons (nodes n1, n2) share the host; accounting
# (slurmdbd + a private MariaDB on 127.0.0.1) is on so that submitit's sacct queries see job states.
#
#   bash slurm/local_cluster.sh start [--install] [--no-accounting]   # idempotent
#   bash slurm/local_cluster.sh status                                # exit 0 when both nodes are up
#   bash slurm/local_cluster.sh stop                                  # stops only the daemons it started
#
# Needs root (daemons, /etc/slurm/slurm.conf, /etc/hosts). State, logs and PID files live in
# $STVIDEO_SLURM_DIR (default /var/tmp/stvideo-slurm). `stop` kills only PIDs recorded there, after
# checking that each PID still runs the expected program. --install apt-installs the packages.
set -euo pipefail

STATE=${STVIDEO_SLURM_DIR:-/var/tmp/stvideo-slurm}
CLUSTER=stvideo
PARTITION=debug
NODES=(n1 n2)
NODE_PORT0=17001
CTLD_PORT=${STVIDEO_SLURMCTLD_PORT:-6817}
DBD_PORT=${STVIDEO_SLURMDBD_PORT:-6819}
DB_PORT=${STVIDEO_SLURM_DB_PORT:-13306}
DB_PASS=stvideo-local-only
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
HOSTS_MARK="# stvideo local_cluster.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)
ACCT_PACKAGES=(slurmdbd slurm-wlm-mysql-plugin mariadb-server mariadb-client)

log() { echo "[local_cluster] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- PID bookkeeping: a daemon is "ours" only if its PID file is in $STATE and the PID runs $2 ----
pid_alive() {  # pidfile program
  local pidfile=$1 prog=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/comm ]] || return 1
  [[ $(</proc/"$pid"/comm) == "$prog"* ]]
}

wait_for() {  # seconds description command...
  local secs=$1 what=$2
  shift 2
  local i
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "timed out after ${secs}s waiting for $what"
}

stop_pid() {  # pidfile program
  local pidfile=$1 prog=$2 pid i
  if ! pid_alive "$pidfile" "$prog"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(<"$pidfile")
  log "stopping $prog (pid $pid)"
  kill -TERM "$pid"
  for ((i = 0; i < 150; i++)); do
    [[ -d /proc/$pid ]] || break
    sleep 0.1
  done
  if [[ -d /proc/$pid ]]; then
    log "$prog (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
    kill -KILL "$pid"
  fi
  rm -f "$pidfile"
}

install_packages() {
  local pkgs=("${PACKAGES[@]}")
  [[ $ACCOUNTING == 1 ]] && pkgs+=("${ACCT_PACKAGES[@]}")
  if dpkg-query -W -f='${Status}\n' "${pkgs[@]}" 2>/dev/null | grep -vq "install ok installed" ||
    [[ $(dpkg-query -W -f='${Status}\n' "${pkgs[@]}" 2>/dev/null | wc -l) -ne ${#pkgs[@]} ]]; then
    log "apt-get install ${pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  fi
}

write_hosts() {
  # MASTER_ADDR is the first node name (n1): it must resolve, or torch.distributed hangs.
  if ! grep -q "$HOSTS_MARK" /etc/hosts; then
    echo "127.0.0.1 ${NODES[*]} $HOSTS_MARK" >>/etc/hosts
  fi
}

remove_hosts() {
  if grep -q "$HOSTS_MARK" /etc/hosts; then
    # /etc/hosts may be a bind mount: rewrite it in place rather than replacing the file.
    local kept
    kept=$(grep -v "$HOSTS_MARK" /etc/hosts)
    printf '%s\n' "$kept" >/etc/hosts
  fi
}

write_slurm_conf() {
  local host cpus mem acct
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(($(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) / 2))  # MB per simulated node
  if [[ $ACCOUNTING == 1 ]]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT"
  else
    acct="AccountingStorageType=accounting_storage/none"
  fi
  mkdir -p /etc/slurm
  cat >"$CONF" <<EOF
# Written by stvideo slurm/local_cluster.sh: two simulated nodes on host $host.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Short credential lifetime and scheduler interval: a requeued job restarts in ~15 s instead of ~145 s.
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=5
StateSaveLocation=$STATE/slurmctld
SlurmctldPidFile=$STATE/pids/slurmctld.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdSpoolDir=$STATE/spool/%n
SlurmdPidFile=$STATE/pids/slurmd-%n.pid
SlurmdLogFile=$STATE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$acct
NodeName=n[1-2] NodeHostname=$host NodeAddr=127.0.0.1 Port=[$NODE_PORT0-$((NODE_PORT0 + 1))] CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
EOF
}

write_dbd_conf() {
  cat >"$DBD_CONF" <<EOF
# Written by stvideo slurm/local_cluster.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE/pids/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DBD_CONF"
}

start_munge() {
  if pid_alive "$STATE/munge/munged.pid" munged; then return 0; fi
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "a munged not started by this script is already serving /run/munge; using it"
    return 0
  fi
  mkdir -p /run/munge "$STATE/munge"
  chown munge:munge /run/munge "$STATE/munge"
  chmod 0755 /run/munge
  chmod 0700 "$STATE/munge"
  [[ -s /etc/munge/munge.key ]] || die "/etc/munge/munge.key is missing (reinstall the munge package)"
  runuser -u munge -- munged --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
    --seed-file="$STATE/munge/munged.seed"
  wait_for 10 munged bash -c 'munge -n </dev/null | unmunge'
}

start_mariadb() {
  local db=$STATE/mysql
  if pid_alive "$STATE/pids/mariadbd.pid" mariadbd; then return 0; fi
  mkdir -p "$STATE/pids"
  if [[ ! -d $db/mysql ]]; then
    mkdir -p "$db"
    chown mysql:mysql "$db"
    mariadb-install-db --user=mysql --datadir="$db" --auth-root-authentication-method=socket \
      --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 ||
      die "mariadb-install-db failed; see $STATE/log/mariadb-install.log"
  fi
  # mariadbd runs as user mysql and writes its own PID file; the directory must be writable for it.
  mkdir -p "$STATE/mysql-run"
  chown mysql:mysql "$STATE/mysql-run"
  setsid mariadbd --user=mysql --datadir="$db" --bind-address=127.0.0.1 --port="$DB_PORT" \
    --socket="$STATE/mysql-run/mysqld.sock" --pid-file="$STATE/mysql-run/mariadbd.pid" \
    --log-error="$STATE/log/mariadbd.log" --skip-name-resolve </dev/null >/dev/null 2>&1 &
  echo $! >"$STATE/pids/mariadbd.pid"
  wait_for 60 mariadb mariadb --socket="$STATE/mysql-run/mysqld.sock" -u root -e "SELECT 1"
  mariadb --socket="$STATE/mysql-run/mysqld.sock" -u root <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

start_slurmdbd() {
  if pid_alive "$STATE/pids/slurmdbd.pid" slurmdbd; then return 0; fi
  write_dbd_conf
  slurmdbd
  wait_for 30 slurmdbd sacctmgr -n show cluster
  if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
}

start_slurm() {
  local n
  if ! pid_alive "$STATE/pids/slurmctld.pid" slurmctld; then
    slurmctld
    wait_for 30 slurmctld scontrol ping
  fi
  for n in "${NODES[@]}"; do
    if ! pid_alive "$STATE/pids/slurmd-$n.pid" slurmd; then
      mkdir -p "$STATE/spool/$n"
      slurmd -N "$n"
    fi
  done
  wait_for 60 "both nodes idle" bash -c \
    "[[ \$(sinfo -h -p $PARTITION -t idle,mix,alloc -o '%D' | awk '{s += \$1} END {print s + 0}') -ge ${#NODES[@]} ]]"
  # Nodes left DOWN/DRAINED by an earlier unclean stop come back here.
  scontrol update nodename=n[1-2] state=resume >/dev/null 2>&1 || true
}

cluster_up() {
  pid_alive "$STATE/pids/slurmctld.pid" slurmctld || return 1
  local n
  for n in "${NODES[@]}"; do pid_alive "$STATE/pids/slurmd-$n.pid" slurmd || return 1; done
  [[ $(sinfo -h -p $PARTITION -t idle,mix,alloc -o '%D' 2>/dev/null | awk '{s += $1} END {print s + 0}') -ge \
    ${#NODES[@]} ]]
}

cmd_start() {
  [[ $(id -u) == 0 ]] || die "run as root (starts daemons, writes $CONF and /etc/hosts)"
  [[ $INSTALL == 1 ]] && install_packages
  command -v slurmctld >/dev/null || die "slurmctld not found; run with --install (apt: ${PACKAGES[*]})"
  if [[ $ACCOUNTING == 1 ]] && ! command -v slurmdbd >/dev/null; then
    die "slurmdbd not found; run with --install (apt: ${ACCT_PACKAGES[*]}) or pass --no-accounting"
  fi
  mkdir -p "$STATE"/{pids,log,spool,slurmctld}
  local t0=$SECONDS
  write_hosts
  write_slurm_conf
  start_munge
  if [[ $ACCOUNTING == 1 ]]; then
    start_mariadb
    start_slurmdbd
  fi
  start_slurm
  log "cluster up in $((SECONDS - t0)) s (state: $STATE)"
  sinfo
}

cmd_stop() {
  local n
  # slurmctld first (it reports to slurmdbd), then the nodes, accounting, database and munge.
  stop_pid "$STATE/pids/slurmctld.pid" slurmctld
  for n in "${NODES[@]}"; do stop_pid "$STATE/pids/slurmd-$n.pid" slurmd; done
  stop_pid "$STATE/pids/slurmdbd.pid" slurmdbd
  stop_pid "$STATE/pids/mariadbd.pid" mariadbd
  stop_pid "$STATE/munge/munged.pid" munged
  remove_hosts
  log "stopped"
}

cmd_status() {
  local name pidfile prog rc=0
  for name in munged:munge/munged.pid mariadbd:pids/mariadbd.pid slurmdbd:pids/slurmdbd.pid \
    slurmctld:pids/slurmctld.pid slurmd:pids/slurmd-n1.pid slurmd:pids/slurmd-n2.pid; do
    prog=${name%%:*}
    pidfile=$STATE/${name#*:}
    if pid_alive "$pidfile" "$prog"; then
      echo "$prog ($(basename "$pidfile")): running, pid $(<"$pidfile")"
    else
      echo "$prog ($(basename "$pidfile")): not running"
    fi
  done
  if cluster_up; then
    sinfo
  else
    echo "cluster: DOWN"
    rc=1
  fi
  return $rc
}

ACTION=${1:-}
[[ -n $ACTION ]] && shift
INSTALL=0
ACCOUNTING=1
for arg in "$@"; do
  case $arg in
  --install) INSTALL=1 ;;
  --no-accounting) ACCOUNTING=0 ;;
  *) die "unknown option $arg (options: --install, --no-accounting)" ;;
  esac
done
case $ACTION in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
  echo "usage: $0 start [--install] [--no-accounting] | stop | status" >&2
  exit 2
  ;;
esac
