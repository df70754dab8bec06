//! Each policy's distribution, exclusion for retries, and hash stability.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderValue};

use super::*;

fn endpoint(i: usize, weight: u32) -> Arc<Endpoint> {
    let addr = format!("127.0.0.1:{}", 9000 + i).parse().unwrap();
    Arc::new(Endpoint::new(addr, format!("container-{i}"), format!("e{i}")).with_weight(weight))
}

fn set_of(endpoints: &[Arc<Endpoint>]) -> EndpointSet {
    EndpointSet::new(endpoints.to_vec())
}

fn set(n: usize) -> EndpointSet {
    set_of(&(0..n).map(|i| endpoint(i, 1)).collect::<Vec<_>>())
}

fn index(e: &Endpoint) -> usize {
    usize::from(e.addr.port() - 9000)
}

fn no_headers() -> &'static HeaderMap {
    static EMPTY: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
    EMPTY.get_or_init(HeaderMap::new)
}

fn key() -> RequestKey<'static> {
    RequestKey {
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        headers: no_headers(),
    }
}

fn counts(balancer: &Balancer, set: &EndpointSet, picks: usize) -> Vec<usize> {
    let mut counts = vec![0; set.len()];
    for _ in 0..picks {
        counts[index(&balancer.pick(set, key(), None, None).unwrap())] += 1;
    }
    counts
}

fn all_policies() -> Vec<Balance> {
    vec![
        Balance::Random,
        Balance::RoundRobin,
        Balance::LeastConn,
        Balance::Weighted,
        Balance::Hash(HashOn::ClientIp),
    ]
}

#[test]
fn no_endpoint_means_no_pick_for_every_policy() {
    for policy in all_policies() {
        assert!(
            Balancer::new(policy.clone())
                .pick(&set(0), key(), None, None)
                .is_none(),
            "{policy:?}"
        );
    }
}

#[test]
fn every_policy_avoids_the_excluded_endpoint_when_it_can() {
    let endpoints = set(3);
    for policy in all_policies() {
        let balancer = Balancer::new(policy.clone());
        for excluded in endpoints.endpoints() {
            for _ in 0..50 {
                let e = balancer
                    .pick(&endpoints, key(), Some(excluded), None)
                    .unwrap();
                assert!(!Arc::ptr_eq(&e, excluded), "{policy:?}");
            }
        }
        let single = set(1);
        let only = single.endpoints()[0].clone();
        assert!(
            balancer.pick(&single, key(), Some(&only), None).is_none(),
            "{policy:?}"
        );
    }
}

#[test]
fn random_spreads_over_all_endpoints() {
    let c = counts(&Balancer::new(Balance::Random), &set(3), 3000);
    // Expected 1000 each; 800 is more than 6 standard deviations away.
    assert!(c.iter().all(|&n| n > 800), "{c:?}");
}

#[test]
fn round_robin_takes_each_endpoint_in_turn() {
    let balancer = Balancer::new(Balance::RoundRobin);
    let endpoints = set(3);
    let order: Vec<usize> = (0..6)
        .map(|_| index(&balancer.pick(&endpoints, key(), None, None).unwrap()))
        .collect();
    assert_eq!(order, [0, 1, 2, 0, 1, 2]);
}

#[test]
fn weighted_follows_smooth_weighted_round_robin() {
    let endpoints = set_of(&[endpoint(0, 5), endpoint(1, 1), endpoint(2, 1)]);
    // nginx's smooth order for 5,1,1: interleaved, never five a's in a row.
    assert_eq!(endpoints.schedule(), [0, 0, 1, 0, 2, 0, 0]);
    let c = counts(&Balancer::new(Balance::Weighted), &endpoints, 700);
    assert_eq!(c, [500, 100, 100]);
}

#[test]
fn weights_are_clamped_to_a_sane_range() {
    assert_eq!(endpoint(0, 0).weight, 1);
    assert_eq!(
        endpoint(0, 10_000).weight,
        crate::backend::endpoint::MAX_WEIGHT
    );
}

#[test]
fn least_conn_prefers_the_less_busy_endpoint() {
    let endpoints = set(2);
    let busy: Vec<_> = (0..10)
        .map(|_| endpoints.endpoints()[0].start_request())
        .collect();
    assert_eq!(endpoints.endpoints()[0].in_flight(), 10);
    let c = counts(&Balancer::new(Balance::LeastConn), &endpoints, 200);
    assert_eq!(c, [0, 200], "with two endpoints both are always compared");
    drop(busy);
    assert_eq!(
        endpoints.endpoints()[0].in_flight(),
        0,
        "guards release their count"
    );
    let c = counts(&Balancer::new(Balance::LeastConn), &endpoints, 2000);
    assert!(
        c.iter().all(|&n| n > 700),
        "idle endpoints share evenly: {c:?}"
    );
}

fn header_key(headers: &HeaderMap) -> RequestKey<'_> {
    RequestKey {
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        headers,
    }
}

fn hash_owner(balancer: &Balancer, set: &EndpointSet, user: usize) -> usize {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-user",
        HeaderValue::from_str(&format!("user-{user}")).unwrap(),
    );
    index(
        &balancer
            .pick(set, header_key(&headers), None, None)
            .unwrap(),
    )
}

#[test]
fn hash_keeps_a_key_on_one_endpoint_and_spreads_keys() {
    let balancer = Balancer::new(Balance::Hash(HashOn::Header(HeaderName::from_static(
        "x-user",
    ))));
    let endpoints = set(4);
    let mut spread = HashMap::new();
    for user in 0..2000 {
        let owner = hash_owner(&balancer, &endpoints, user);
        assert_eq!(
            owner,
            hash_owner(&balancer, &endpoints, user),
            "stable for user {user}"
        );
        *spread.entry(owner).or_insert(0) += 1;
    }
    // 500 each expected; consistent hashing with 128 points each stays within ±40%.
    assert_eq!(spread.len(), 4);
    assert!(
        spread.values().all(|&n| (300..=700).contains(&n)),
        "{spread:?}"
    );
}

#[test]
fn adding_an_endpoint_moves_about_one_in_n_keys_all_to_the_new_one() {
    let balancer = Balancer::new(Balance::Hash(HashOn::Header(HeaderName::from_static(
        "x-user",
    ))));
    let four: Vec<_> = (0..4).map(|i| endpoint(i, 1)).collect();
    let mut five = four.clone();
    five.push(endpoint(4, 1));
    let (before, after) = (set_of(&four), set_of(&five));
    let users = 5000;
    let mut moved = 0;
    for user in 0..users {
        let (old, new) = (
            hash_owner(&balancer, &before, user),
            hash_owner(&balancer, &after, user),
        );
        if old != new {
            assert_eq!(new, 4, "a key only ever moves to the new endpoint");
            moved += 1;
        }
    }
    let share = f64::from(moved) / f64::from(users as u32);
    assert!(
        (0.12..=0.28).contains(&share),
        "moved {share:.3} of keys, expected about 1/5"
    );
}

#[test]
fn hash_by_cookie_and_ip_and_missing_keys() {
    let by_cookie = Balancer::new(Balance::Hash(HashOn::Cookie("session".into())));
    let endpoints = set(4);
    let owner = |cookie: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
        index(
            &by_cookie
                .pick(&endpoints, header_key(&headers), None, None)
                .unwrap(),
        )
    };
    let first = owner("theme=dark; session=abc123");
    for _ in 0..20 {
        assert_eq!(
            owner("session=abc123"),
            first,
            "only the named cookie counts"
        );
    }

    let by_ip = Balancer::new(Balance::Hash(HashOn::ClientIp));
    let ip_owner = |ip: [u8; 4]| {
        let key = RequestKey {
            client_ip: IpAddr::from(ip),
            headers: no_headers(),
        };
        index(&by_ip.pick(&endpoints, key, None, None).unwrap())
    };
    assert_eq!(ip_owner([203, 0, 113, 7]), ip_owner([203, 0, 113, 7]));

    // No cookie: placed at random rather than all on one endpoint.
    let c = counts(&by_cookie, &endpoints, 2000);
    assert!(c.iter().all(|&n| n > 300), "{c:?}");
}

#[test]
fn every_policy_skips_unhealthy_and_ejected_endpoints() {
    for policy in all_policies() {
        let endpoints = set(3);
        endpoints.endpoints()[0].set_healthy(false);
        endpoints.endpoints()[1]
            .ejected_until
            .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        let balancer = Balancer::new(policy.clone());
        for _ in 0..100 {
            let e = balancer.pick(&endpoints, key(), None, None).unwrap();
            assert_eq!(index(&e), 2, "{policy:?} picked an unavailable endpoint");
        }
        endpoints.endpoints()[2].set_healthy(false);
        assert!(
            balancer.pick(&endpoints, key(), None, None).is_none(),
            "{policy:?}: none left means no pick"
        );
    }
}
