//! What kind of IP address a peer or a claim is, for the rules that judge addresses
//! (which can be dialled, which can be our own) and those that count groups of hosts
//! instead of hosts (observed-address votes, address-book sources, eviction).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it is.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Whether one host can have `ip`: not unspecified (0.0.0.0, ::), multicast or the
/// IPv4 broadcast address.
pub(crate) fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// The network group of `ip`: its IPv4 /24 or IPv6 /48 (an IPv4-mapped IPv6 address
/// is its IPv4 group), as the first address of the group. Hosts of one group are
/// likely run by one party, so limits and preferences count groups, not hosts.
pub(crate) fn net_group(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn net_groups_are_slash_24_and_slash_48() {
        assert_eq!(net_group(ip("10.1.2.3")), ip("10.1.2.0"));
        assert_eq!(net_group(ip("::ffff:10.1.2.3")), ip("10.1.2.0"));
        assert_eq!(net_group(ip("2001:db8:1:2:3::4")), ip("2001:db8:1::"));
    }

    #[test]
    fn unicast_excludes_unspecified_multicast_and_broadcast() {
        for good in ["10.0.0.1", "127.0.0.1", "::1", "2001:db8::1"] {
            assert!(is_unicast(ip(good)), "{good}");
        }
        for bad in ["0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "ff02::1"] {
            assert!(!is_unicast(ip(bad)), "{bad}");
        }
    }
}
