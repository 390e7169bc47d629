# The native nft policy drop of FirewallTests (../../../Switchover.Lab/Firewalls/nft-policy-drop.nft).
nft -f "$(dirname "$0")/../../../Switchover.Lab/Firewalls/nft-policy-drop.nft"
