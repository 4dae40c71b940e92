#!/bin/sh
# voxnix: keeps the bridge filter's set of leases (data/nftables/bridge-filter.nft)
# equal to the DHCP server's. Used as it is by the NixOS module and the sandbox
# appliance, with @NFT@ replaced by the nft binary.
#
#   dnsmasq --dhcp-script=THIS      add|old|del MAC IPV4 [HOSTNAME]
#   THIS reload LEASEFILE           after the filter was (re)loaded: every lease
#
# A container may speak IPv4 and ARP to the host only as the address its MAC
# leased, so none can claim a neighbour's address.
set -u
nft=@NFT@

mac_ok() { case "$1" in *[!0-9a-fA-F:]*|"") return 1 ;; esac; [ ${#1} -eq 17 ]; }
ip_ok() { case "$1" in *[!0-9.]*|"") return 1 ;; esac; }

add() { mac_ok "$1" && ip_ok "$2" && "$nft" add element bridge voxnix leases "{ $1 . $2 }"; }
del() { mac_ok "$1" && ip_ok "$2" && "$nft" delete element bridge voxnix leases "{ $1 . $2 }" 2>/dev/null; }

case "${1:-}" in
    add|old) add "${2:-}" "${3:-}" ;;
    del) del "${2:-}" "${3:-}" || true ;;
    reload)
        [ -r "${2:-}" ] || exit 0
        # dnsmasq's lease file: EXPIRY MAC IP HOSTNAME CLIENT-ID
        while read -r _expiry mac ip _rest; do
            add "$mac" "$ip" || true
        done < "$2"
        ;;
esac
exit 0
