# The native nft policy drop of FirewallTests (../../../Switchover.IntegrationTests/Firewalls/nft-policy-drop.nft).
nft -f "$(dirname "$0")/../../../Switchover.IntegrationTests/Firewalls/nft-policy-drop.nft"
