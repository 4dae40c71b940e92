#!/bin/sh
# voxnix: keeps the bridge filter's set of leases (data/nftables/bridge-filter.nft)
# equal to the DHCP server's. Used as it is by the NixOS module and the sandbox
# appliance, with @NFT@ replaced by the nft binary and @PATH@ by a PATH holding
# date, tr, sed and grep.
#
#   dnsmasq --dhcp-script=THIS      add|old|del MAC IPV4 [HOSTNAME]
#                                   (DNSMASQ_LEASE_EXPIRES: the lease's end, epoch)
#   THIS reload LEASEFILE           after the filter was (re)loaded: every lease
#
# A container may speak IPv4 and ARP to the host only as the address its MAC
# leased, so none can claim a neighbour's address. Each element lives as long
# as its lease (a lease that ends without a "del" cannot leave one behind),
# and an address is bound to one MAC at a time: binding it drops any other.
set -u
# dnsmasq hands its helper's environment on; the tools this needs, whatever it is.
PATH=@PATH@
export PATH
nft=@NFT@
set_=leases

mac_ok() { case "$1" in *[!0-9a-fA-F:]*|"") return 1 ;; esac; [ ${#1} -eq 17 ]; }
ip_ok() { case "$1" in *[!0-9.]*|"") return 1 ;; esac; }
num_ok() { case "$1" in *[!0-9]*|"") return 1 ;; esac; }

# bind MAC IP EXPIRES: the one element for IP, until EXPIRES (0: no end).
bind() {
    mac_ok "$1" && ip_ok "$2" || return 0
    mac=$(echo "$1" | tr 'A-F' 'a-f')
    timeout=""
    if num_ok "${3:-}" && [ "$3" -gt 0 ]; then
        left=$(( $3 - $(date +%s) ))
        [ "$left" -gt 0 ] || return 0
        timeout=" timeout ${left}s"
    fi
    ip_re=$(echo "$2" | sed 's/\./\\./g')
    {
        # Whatever else holds this address goes, in the same transaction.
        "$nft" list set bridge voxnix "$set_" 2>/dev/null \
            | grep -oE "[0-9a-f:]{17} \. $ip_re([^0-9.]|\$)" \
            | sed -E 's/([^0-9.])$//' \
            | while read -r other _dot _ip; do
                [ "$other" = "$mac" ] || echo "delete element bridge voxnix $set_ { $other . $2 }"
            done
        # add (a no-op if it is there), delete, add: the element now ends
        # with this lease, whether it was there or not.
        echo "add element bridge voxnix $set_ { $mac . $2 }"
        echo "delete element bridge voxnix $set_ { $mac . $2 }"
        echo "add element bridge voxnix $set_ { $mac . $2$timeout }"
    } | "$nft" -f -
}

unbind() {
    mac_ok "$1" && ip_ok "$2" || return 0
    mac=$(echo "$1" | tr 'A-F' 'a-f')
    "$nft" delete element bridge voxnix "$set_" "{ $mac . $2 }" 2>/dev/null || true
}

case "${1:-}" in
    add|old) bind "${2:-}" "${3:-}" "${DNSMASQ_LEASE_EXPIRES:-0}" ;;
    del) unbind "${2:-}" "${3:-}" ;;
    reload)
        [ -r "${2:-}" ] || exit 0
        # dnsmasq's lease file: EXPIRY MAC IP HOSTNAME CLIENT-ID
        while read -r expiry mac ip _rest; do
            bind "$mac" "$ip" "$expiry" || true
        done < "$2"
        ;;
esac
exit 0
