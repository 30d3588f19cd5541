#!/bin/bash
# voprd instance bootstrap (Amazon Linux 2023): installs Python and voprd into its own virtual
# environment, writes /etc/default/voprd from the stack's values, installs and starts the unit.
#
# The EC2 user data writes the stack's values to /etc/voprd/stack.env, this script and the units
# to /opt/voprd/, then runs `bootstrap.sh --boot`, which hands over to voprd-bootstrap.service:
# that unit runs `bootstrap.sh --wait` now and at every boot, and again after a failure.
# Idempotent: each step checks before it changes anything, so running it again is harmless.
#
#   sudo /opt/voprd/bootstrap.sh                 re-apply (installs nothing that is there)
#   sudo /opt/voprd/bootstrap.sh --update        reinstall voprd from VOPRD_SOURCE, restart
#   sudo /opt/voprd/bootstrap.sh --update --wheel-sha256 HASH   the bucket's wheel HASH instead
#   VOPRD_ROOT=/tmp/root bootstrap.sh --dry-run  write the files under /tmp/root only
#
# What it installs is pinned: the wheel by its sha256 (checked with sha256sum -c before pip sees
# it) or, for a git source, by a full commit id; the wheel's dependencies by the hashed lock the
# wheel carries (voprd/lock/, made by deploy/lock.py), installed with --require-hashes
# --only-binary=:all:; pip itself by its own hashed lock; the wheel with --no-deps --no-index.
set -euo pipefail
shopt -s inherit_errexit  # set -e inside $(...) too: a failed step there stops the script

usage() {
  cat <<'EOF'
usage: bootstrap.sh [--update] [--source SPEC] [--wheel-sha256 HASH] [--wait] [--boot] [--dry-run]
  --update       reinstall voprd from its source and restart the daemon
  --source SPEC  record a new source in stack.env: "bucket" (the wheel under
                 s3://BUCKET/releases/SHA256/ whose sha256 is VOPRD_WHEEL_SHA256),
                 https://.../NAME.whl#sha256=HASH, or git+https://HOST/REPO.git@COMMIT (40 hex)
  --wheel-sha256 HASH  record the sha256 of the bucket's wheel to install
  --wait         with source "bucket": wait until the wheel is there (else fail at once)
  --boot         install and start voprd-bootstrap.service (which runs --wait), nothing else
  --dry-run      write files only; no package installs, no AWS calls, no pip, no systemctl
environment: VOPRD_ROOT  prefix for every path written (tests; default /)
             VOPRD_WHEEL_POLL_S  seconds between looks for a wheel with --wait (default 30)
EOF
}

root="${VOPRD_ROOT:-}"
dry_run=0
update=0
wait_for_wheel=0
boot=0
new_source=""
new_sha256=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --update) update=1 ;;
    --dry-run) dry_run=1 ;;
    --wait) wait_for_wheel=1 ;;
    --boot) boot=1 ;;
    --source)
      [ "$#" -ge 2 ] || { echo "bootstrap.sh: --source needs a value" >&2; exit 2; }
      new_source="$2"
      shift
      ;;
    --wheel-sha256)
      [ "$#" -ge 2 ] || { echo "bootstrap.sh: --wheel-sha256 needs a value" >&2; exit 2; }
      new_sha256="$2"
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bootstrap.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
poll_s="${VOPRD_WHEEL_POLL_S:-30}"
case "$poll_s" in '' | *[!0-9]*) echo "bootstrap.sh: VOPRD_WHEEL_POLL_S must be whole seconds" >&2; exit 2 ;; esac

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
stack_env="$root/etc/voprd/stack.env"
env_file="$root/etc/default/voprd"
unit_file="$root/etc/systemd/system/voprd.service"
prefix="$root/opt/voprd"
venv="$prefix/venv"
python_pkg="python3.11"

log() { echo "voprd-bootstrap: $*"; }

# Runs a command, or only says it would in a dry run.
run() {
  if [ "$dry_run" -eq 1 ]; then
    log "dry-run: would run: $*"
  else
    "$@"
  fi
}

# Installs $2 (a file with the wanted content) as $1 with mode $3, only if it differs.
install_if_changed() {
  local dest="$1" src="$2" mode="$3"
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    log "unchanged: ${dest#"$root"}"
    return 1
  fi
  install -D -m "$mode" "$src" "$dest"
  log "wrote: ${dest#"$root"}"
  return 0
}

# A unit file shipped next to this script (on an instance) or in deploy/systemd/ (a checkout).
unit_source() {
  local name="$1"
  if [ -f "$script_dir/$name" ]; then
    echo "$script_dir/$name"
  elif [ -f "$script_dir/systemd/$name" ]; then
    echo "$script_dir/systemd/$name"
  else
    echo "bootstrap.sh: no $name next to $0" >&2
    exit 1
  fi
}

# --boot (from the user data): the rest runs in voprd-bootstrap.service, so that cloud-init does
# not wait for a wheel upload, a failed step is retried, and every boot re-checks the install.
if [ "$boot" -eq 1 ]; then
  boot_unit_src="$(unit_source voprd-bootstrap.service)"
  if install_if_changed "$root/etc/systemd/system/voprd-bootstrap.service" "$boot_unit_src" 0644; then
    run systemctl daemon-reload
  fi
  run systemctl enable voprd-bootstrap.service
  run systemctl start --no-block voprd-bootstrap.service
  log "started voprd-bootstrap.service (journalctl -u voprd-bootstrap -f)"
  exit 0
fi

# One bootstrap at a time: voprd-bootstrap.service (at boot, or waiting for a wheel) and an
# operator's --update must not run dnf and pip into the same environment at once.
if [ "$dry_run" -eq 0 ]; then
  install -d -m 0755 "$root/run"
  exec 9>"$root/run/voprd-bootstrap.lock"
  if ! flock -w 600 9; then
    echo "bootstrap.sh: another bootstrap is running (journalctl -u voprd-bootstrap); try again later" >&2
    exit 1
  fi
fi

# Reads KEY=VALUE lines literally (never sourced: the values are data, not shell).
declare -A stack=()
read_stack_env() {
  local key value
  [ -f "$stack_env" ] || { echo "bootstrap.sh: missing $stack_env (written by the user data)" >&2; exit 1; }
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in '' | '#'*) continue ;; esac
    key="${line%%=*}"
    value="${line#*=}"
    stack["$key"]="$value"
  done <"$stack_env"
  for key in VOPRD_SOURCE VOPRD_SEED_START VOPRD_BUCKET VOPRD_SNS_TOPIC_ARN VOPRD_LOG_GROUP AWS_REGION; do
    [ -n "${stack[$key]:-}" ] || { echo "bootstrap.sh: $stack_env has no $key" >&2; exit 1; }
  done
  case "${stack[VOPRD_SEED_START]}" in
    *[!0-9]*) echo "bootstrap.sh: VOPRD_SEED_START must be a number" >&2; exit 1 ;;
  esac
  case "${stack[AWS_ACCOUNT_ID]:-}" in
    '' | *[!0-9]*) echo "bootstrap.sh: $stack_env has no AWS_ACCOUNT_ID (12 digits)" >&2; exit 1 ;;
  esac
  # Absent in a stack.env written before the IPv6-only network: that stack had public IPv4.
  case "${stack[VOPRD_NETWORK]:=public-ipv4}" in
    ipv6-only | public-ipv4) ;;
    *) echo "bootstrap.sh: VOPRD_NETWORK must be ipv6-only or public-ipv4" >&2; exit 1 ;;
  esac
}

# systemd EnvironmentFile syntax: double quotes, with \ " ` $ escaped.
quote_env() {
  local v="$1"
  v="${v//\\/\\\\}"
  v="${v//\"/\\\"}"
  v="${v//\`/\\\`}"
  v="${v//\$/\\\$}"
  printf '"%s"' "$v"
}

# Only sources that pin their content: the stack's bucket with the wheel's sha256, an HTTPS URL of
# a wheel with its sha256, a git repository at a full commit id. No package index names.
check_source() {
  local hex64='[0-9a-f]{64}'
  case "$source_spec" in
    bucket)
      [[ "${stack[VOPRD_WHEEL_SHA256]:-}" =~ ^$hex64$ ]] || {
        echo "bootstrap.sh: source bucket needs VOPRD_WHEEL_SHA256 (64 hex digits; docs/deploy.md, Quick start)" >&2
        exit 1
      } ;;
    https://*)
      [[ "$source_spec" =~ ^https://[A-Za-z0-9._~:/%+=,-]+/[A-Za-z0-9._+-]+\.whl#sha256=$hex64$ ]] || {
        echo "bootstrap.sh: an https source must be https://.../NAME.whl#sha256=HASH (64 hex)" >&2
        exit 1
      } ;;
    git+https://*)
      [[ "$source_spec" =~ ^git\+https://[A-Za-z0-9._~:/%+=,-]+@[0-9a-f]{40}$ ]] || {
        echo "bootstrap.sh: a git source must be git+https://HOST/REPO.git@COMMIT (a full 40-hex commit id)" >&2
        exit 1
      } ;;
    *)
      echo "bootstrap.sh: VOPRD_SOURCE must be bucket, https://.../NAME.whl#sha256=HASH or git+https://...@COMMIT, not $source_spec" >&2
      exit 1 ;;
  esac
}

# Records KEY=VALUE in stack.env, replacing the key's line.
set_stack_value() {
  local key="$1" value="$2" tmp
  tmp="$(mktemp)"
  grep -v "^$key=" "$stack_env" >"$tmp" || true
  printf '%s=%s\n' "$key" "$value" >>"$tmp"
  install_if_changed "$stack_env" "$tmp" 0644 || true
  rm -f "$tmp"
}

read_stack_env
source_spec="${new_source:-${stack[VOPRD_SOURCE]}}"
stack[VOPRD_WHEEL_SHA256]="${new_sha256:-${stack[VOPRD_WHEEL_SHA256]:-}}"
check_source  # before anything is recorded: a refused value changes nothing
if [ -n "$new_source" ]; then
  set_stack_value VOPRD_SOURCE "$new_source"
fi
if [ -n "$new_sha256" ]; then
  set_stack_value VOPRD_WHEEL_SHA256 "$new_sha256"
fi
bucket="${stack[VOPRD_BUCKET]}"
account="${stack[AWS_ACCOUNT_ID]}"
export AWS_REGION="${stack[AWS_REGION]}"

# 0. The AWS SDK settings of this network, for the daemon (in /etc/default/voprd) and for this
# script's own aws calls. IPv6-only: the dual-stack service endpoints (the default names of SNS,
# CloudWatch and CloudWatch Logs answer over IPv4 only) and the metadata service at
# fd00:ec2::254 (169.254.169.254 is unreachable without an IPv4 address); the SSM agent
# (Session Manager, Run Command) must use dual-stack endpoints too, and chrony the Amazon Time
# Sync Service's IPv6 address (request signatures need a right clock).
aws_settings=()
if [ "${stack[VOPRD_NETWORK]}" = ipv6-only ]; then
  aws_settings=(AWS_USE_DUALSTACK_ENDPOINT=true AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6)
  export "${aws_settings[@]}"
  tmp="$(mktemp)"
  echo '{ "Agent": { "UseDualStackEndpoint": true } }' >"$tmp"
  if install_if_changed "$root/etc/amazon/ssm/amazon-ssm-agent.json" "$tmp" 0644; then
    run systemctl restart amazon-ssm-agent.service
  fi
  rm -f "$tmp"
  time_sync="server fd00:ec2::123 prefer iburst minpoll 4 maxpoll 4"
  chrony_conf="$root/etc/chrony.conf"
  if grep -qsF 'fd00:ec2::123' "$chrony_conf" "$root"/etc/chrony.d/*.sources; then
    log "unchanged: chrony already has fd00:ec2::123"
  elif grep -qs '^sourcedir /etc/chrony.d' "$chrony_conf"; then
    install -d -m 0755 "$root/etc/chrony.d"
    echo "$time_sync" >"$root/etc/chrony.d/voprd-time-sync-ipv6.sources"
    log "wrote: /etc/chrony.d/voprd-time-sync-ipv6.sources"
    run chronyc reload sources || log "chronyc failed; chronyd reads the file at its next start"
  elif [ -f "$chrony_conf" ]; then
    echo "$time_sync" >>"$chrony_conf"
    log "added fd00:ec2::123 to /etc/chrony.conf"
    run systemctl try-restart chronyd.service
  else
    log "no /etc/chrony.conf: the clock is not synchronised over IPv6"
  fi
fi

# 1. Python (git for a git source, the AWS CLI for "bucket" if the image lacks it) from the
# distribution's repositories.
packages=("$python_pkg" "$python_pkg-pip")
case "$source_spec" in
  git+*) packages+=(git) ;;
  bucket) command -v aws >/dev/null 2>&1 || packages+=(awscli-2) ;;
esac
if [ "$dry_run" -eq 0 ] && rpm -q "${packages[@]}" >/dev/null 2>&1; then
  log "unchanged: packages ${packages[*]}"
else
  run dnf install -y -q "${packages[@]}"
fi

pip_quiet=(-q --disable-pip-version-check --no-cache-dir)
# pip install of a hashed lock: every file checked against its sha256, wheels only (no build
# runs code from an sdist), nothing that the lock does not name.
pip_locked() {
  run "$venv/bin/pip" install "${pip_quiet[@]}" --require-hashes --only-binary=:all: -r "$1"
}

# Moves a download ($1) to $prefix/dist/$2 if its sha256 is $3 (sha256sum -c), else refuses.
take_verified() {
  local download="$1" name="$2" sha256="$3"
  case "$name" in
    *[!A-Za-z0-9._+-]* | -*) echo "bootstrap.sh: refusing wheel name: $name" >&2; exit 1 ;;
  esac
  [[ "$name" == *.whl ]] || { echo "bootstrap.sh: not a wheel: $name" >&2; exit 1; }
  if ! echo "$sha256  $download" | sha256sum -c --quiet --strict - >&2; then
    rm -f "$download"
    echo "bootstrap.sh: $name does not have the sha256 the stack pins ($sha256): refused" >&2
    exit 1
  fi
  mv -f "$download" "$prefix/dist/$name"
  log "verified: $name (sha256 $sha256)" >&2
  echo "$prefix/dist/$name"
}

# Source "bucket": the wheel under s3://BUCKET/releases/SHA256/ (the publish step of the guide
# puts it there; only ReleasePublisherArn may write releases/). The bucket must be this
# account's (--expected-bucket-owner): a bucket of that name in another account is refused.
fetch_from_bucket() {
  local sha256="${stack[VOPRD_WHEEL_SHA256]}" query key listed what
  # JMESPath literals in backquotes, not shell: single quotes on purpose.
  # shellcheck disable=SC2016
  query='Contents[?ends_with(Key, `".whl"`)] | [0].Key'
  while :; do
    listed=1
    key="$(aws s3api list-objects-v2 --bucket "$bucket" --prefix "releases/$sha256/" \
      --expected-bucket-owner "$account" --no-paginate --query "$query" --output text)" || listed=0
    if [ "$listed" -eq 1 ] && [ -n "$key" ] && [ "$key" != None ]; then
      break
    fi
    if [ "$listed" -eq 0 ]; then
      what="could not list s3://$bucket/releases/$sha256/ (the aws error is above)"
    else
      what="no voprd wheel under s3://$bucket/releases/$sha256/ (publish it: docs/deploy.md, Quick start)"
    fi
    if [ "$wait_for_wheel" -eq 0 ]; then
      echo "bootstrap.sh: $what" >&2
      exit 1
    fi
    log "waiting: $what; next look in ${poll_s}s" >&2
    sleep "$poll_s"
  done
  aws s3api get-object --bucket "$bucket" --key "$key" --expected-bucket-owner "$account" \
    "$prefix/dist/.download" >/dev/null
  log "fetched: s3://$bucket/$key" >&2
  take_verified "$prefix/dist/.download" "${key##*/}" "$sha256"
}

# Source https://.../NAME.whl#sha256=HASH: the URL's wheel, if it has that hash.
fetch_from_url() {
  local url="${source_spec%%#*}"
  curl --proto =https --tlsv1.2 -fsSL --retry 3 -o "$prefix/dist/.download" "$url" >&2
  log "fetched: $url" >&2
  take_verified "$prefix/dist/.download" "${url##*/}" "${source_spec##*#sha256=}"
}

# Source git+https://HOST/REPO.git@COMMIT: that commit (checked after the fetch), built into a
# wheel with the build backend of its own hashed lock and no build isolation (nothing unhashed).
fetch_from_git() {
  local url="${source_spec#git+}" commit="${source_spec##*@}" src="$prefix/src"
  url="${url%@*}"
  rm -rf "$src" "$prefix/dist"/voprd-*.whl
  git init -q "$src" >&2
  git -C "$src" fetch -q --depth 1 "$url" "$commit" >&2
  git -C "$src" -c advice.detachedHead=false checkout -q FETCH_HEAD >&2
  [ "$(git -C "$src" rev-parse HEAD)" = "$commit" ] || {
    echo "bootstrap.sh: $url did not give commit $commit" >&2
    exit 1
  }
  pip_locked "$src/voprd/lock/instance-pip.txt" >&2
  pip_locked "$src/voprd/lock/instance-build.txt" >&2
  run "$venv/bin/pip" wheel "${pip_quiet[@]}" --no-deps --no-build-isolation --no-index \
    --wheel-dir "$prefix/dist" "$src" >&2
  log "built: $url@$commit" >&2
  echo "$prefix/dist/"voprd-*.whl
}

# Prints the local path of the source's wheel, verified.
fetch_wheel() {
  install -d -m 0755 "$prefix/dist"
  rm -f "$prefix/dist/.download"
  case "$source_spec" in
    bucket) fetch_from_bucket ;;
    https://*) fetch_from_url ;;
    git+https://*) fetch_from_git ;;
  esac
}

# 2. voprd in its own virtual environment: pip from its lock, the wheel's dependencies from the
# lock inside the (verified) wheel, then the wheel itself without dependencies or an index.
if [ ! -x "$venv/bin/python" ]; then
  run "$python_pkg" -m venv "$venv"
fi
if [ "$update" -eq 1 ] || [ ! -x "$venv/bin/voprd" ]; then
  if [ "$dry_run" -eq 1 ]; then
    log "dry-run: would fetch and verify the wheel of $source_spec"
    wheel="$prefix/dist/VERIFIED.whl"
  else
    wheel="$(fetch_wheel)"
  fi
  locks="$prefix/locks"
  if [ "$dry_run" -eq 1 ]; then
    log "dry-run: would extract voprd/lock/ from $wheel"
  else
    install -d -m 0755 "$locks"
    "$python_pkg" -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for n in ("instance-pip.txt", "instance-runtime.txt"):
    open(f"{sys.argv[2]}/{n}", "wb").write(z.read(f"voprd/lock/{n}"))' "$wheel" "$locks" || {
      echo "bootstrap.sh: $wheel has no voprd/lock/ (a wheel of voprd before its locks?)" >&2
      exit 1
    }
  fi
  pip_locked "$locks/instance-pip.txt"
  pip_locked "$locks/instance-runtime.txt"
  run "$venv/bin/pip" install "${pip_quiet[@]}" --no-deps --no-index --force-reinstall "$wheel"
else
  log "unchanged: $venv/bin/voprd (use --update to upgrade)"
fi

# `voprd status`, `voprd --once ...` for operators on the instance (sudo -i or SSM shell).
link="$root/usr/local/bin/voprd"
if [ "$(readlink "$link" 2>/dev/null)" != "/opt/voprd/venv/bin/voprd" ]; then
  install -d -m 0755 "$root/usr/local/bin"
  ln -sfn /opt/voprd/venv/bin/voprd "$link"
  log "wrote: /usr/local/bin/voprd -> /opt/voprd/venv/bin/voprd"
fi

# 3. The daemon's environment, from the stack's values.
daemon_args="--seed ${stack[VOPRD_SEED_START]}"
if [ -n "${stack[VOPRD_EXTRA_ARGS]:-}" ]; then
  daemon_args="$daemon_args ${stack[VOPRD_EXTRA_ARGS]}"
fi
tmp="$(mktemp)"
{
  echo "# Written by /opt/voprd/bootstrap.sh from /etc/voprd/stack.env; edits are overwritten."
  echo "VOPRD_BUCKET=$(quote_env "$bucket")"
  echo "VOPRD_SNS_TOPIC_ARN=$(quote_env "${stack[VOPRD_SNS_TOPIC_ARN]}")"
  echo "VOPRD_LOG_GROUP=$(quote_env "${stack[VOPRD_LOG_GROUP]}")"
  # The fleet run this instance joins (FleetSize > 1: every instance of the stack; 1: a fleet
  # of one). Absent in a stack.env written before the fleet existed: the daemon's default run.
  if [ -n "${stack[VOPRD_RUN]:-}" ]; then
    echo "VOPRD_RUN=$(quote_env "${stack[VOPRD_RUN]}")"
  fi
  echo "AWS_REGION=$(quote_env "${stack[AWS_REGION]}")"
  for setting in "${aws_settings[@]}"; do
    echo "${setting%%=*}=$(quote_env "${setting#*=}")"
  done
  echo "VOPRD_ARGS=$(quote_env "$daemon_args")"
} >"$tmp"
env_changed=0
install_if_changed "$env_file" "$tmp" 0644 && env_changed=1
rm -f "$tmp"

# 4. The units: next to this script on an instance, deploy/systemd/ in a source checkout.
unit_changed=0
install_if_changed "$unit_file" "$(unit_source voprd.service)" 0644 && unit_changed=1
reload=$unit_changed
install_if_changed "$root/etc/systemd/system/voprd-bootstrap.service" \
  "$(unit_source voprd-bootstrap.service)" 0644 && reload=1

# 5. Start (or restart when anything it runs with changed); a restart drains gracefully.
# --no-block: inside voprd-bootstrap.service, waiting for voprd's start would only delay boot.
if [ "$reload" -eq 1 ]; then
  run systemctl daemon-reload
fi
run systemctl enable voprd.service voprd-bootstrap.service
if [ "$update" -eq 1 ] || [ "$env_changed" -eq 1 ] || [ "$unit_changed" -eq 1 ]; then
  run systemctl restart --no-block voprd.service
else
  run systemctl start --no-block voprd.service
fi
log "done"
