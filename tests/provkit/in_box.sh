#!/bin/sh
# Runs inside a test namespace (ip netns exec NS unshare --mount --propagation private ...):
# puts writable overlays over /etc, /opt, /var and /usr/local (their changes land in a tmpfs
# and vanish with this mount namespace: the machine's own files are never touched), applies
# the playbook with `-c local` like an operator on the box, then runs the installed unit's
# command line as its user, with its capabilities: systemd-like supervision without systemd.
#   in_box.sh LOGFILE ansible-playbook-args...
set -eu
log=$1; shift
scratch=$(mktemp -d)
mount -t tmpfs meshsip-box "$scratch"
for dir in /etc /opt /var /usr/local; do
    mkdir -p "$scratch/upper$dir" "$scratch/work$dir"
    mount -t overlay overlay -o "lowerdir=$dir,upperdir=$scratch/upper$dir,workdir=$scratch/work$dir" "$dir"
done
if ! "$@" >"$log" 2>&1; then
    echo "playbook failed: see $log" >&2
    tail -40 "$log" >&2
    exit 3
fi
unit=/etc/systemd/system/meshsip.service
user=$(sed -n 's/^User=//p' "$unit")
cmd=$(sed -n 's/^ExecStart=//p' "$unit")
caps=$(sed -n 's/^AmbientCapabilities=//p' "$unit" | tr 'A-Z' 'a-z' | sed 's/cap_/+/g; s/ /,/g')
echo "starting as $user: $cmd" >&2
if [ -n "$caps" ]; then
    set -- --inh-caps "$caps" --ambient-caps "$caps"
else
    set --
fi
# shellcheck disable=SC2086
exec setpriv --reuid "$user" --regid "$user" --init-groups "$@" --no-new-privs $cmd
