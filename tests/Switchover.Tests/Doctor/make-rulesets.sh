#!/usr/bin/env bash
# Regenerates the golden rulesets of DoctorTests: for each firewall shape in Shapes/, a throwaway network namespace
# gets the shape's real rules (nft, iptables-nft, iptables-legacy, ufw), and what doctor reads is dumped into
# Rulesets/: NAME.json (nft -j list ruleset, pretty-printed), NAME.nft (nft list ruleset, for reading), and, where
# the shape has them, the iptables-save dumps. The namespace is deleted afterwards. Run as root:
#   tests/Switchover.Tests/Doctor/make-rulesets.sh [SHAPE...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/Rulesets"
mkdir -p "$out"
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=($(cd "$here/Shapes" && ls *.sh | sed 's/\.sh$//'))

ns="doctor-fixture-$$"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
for shape in "${shapes[@]}"; do
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip netns exec "$ns" sh -e "$here/Shapes/$shape.sh"
	ip netns exec "$ns" nft -j list ruleset | python3 -m json.tool --indent 1 > "$out/$shape.json"
	ip netns exec "$ns" nft list ruleset > "$out/$shape.nft"
	# Only the dumps doctor itself would read: iptables-nft-save when nft shows xt expressions of that family,
	# iptables-legacy-save when /proc/net/ip{,6}_tables_names lists legacy tables. Dates are dropped.
	for family in ip ip6; do
		prefix=$([ $family = ip ] && echo iptables || echo ip6tables)
		if grep -q "\"family\": \"$family\"" "$out/$shape.json" && ip netns exec "$ns" nft -j list ruleset \
				| python3 -c "import json,sys; d=json.load(sys.stdin)['nftables']; sys.exit(0 if any('rule' in o and o['rule']['family']=='$family' and any('xt' in e for e in o['rule']['expr']) for o in d) else 1)"; then
			ip netns exec "$ns" "$prefix-nft-save" | grep -v '^# \(Generated\|Completed\)' > "$out/$shape.$prefix-nft-save"
		fi
		names=$([ $family = ip ] && echo ip_tables_names || echo ip6_tables_names)
		if [ -n "$(ip netns exec "$ns" cat /proc/net/$names)" ]; then
			ip netns exec "$ns" cat "/proc/net/$names" > "$out/$shape.$names"
			ip netns exec "$ns" "$prefix-legacy-save" | grep -v '^# \(Generated\|Completed\)' > "$out/$shape.$prefix-legacy-save"
		fi
	done
	ip netns del "$ns"
	echo "$shape: $(ls "$out" | grep -c "^$shape\.") files"
done
