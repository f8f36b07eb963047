// New migration folders are embedded at compile time: rebuild when they change.
//
// `listings_test_services` is set when the tests can reach PostgreSQL and Redis: the
// tests that need them run then, and are reported as ignored (never as passed)
// otherwise.
fn main() {
    println!("cargo::rerun-if-changed=migrations");
    println!("cargo::rerun-if-env-changed=LISTINGS_TEST_DATABASE_URL");
    println!("cargo::rerun-if-env-changed=LISTINGS_TEST_REDIS_URL");
    println!("cargo::rustc-check-cfg=cfg(listings_test_services)");
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    if set("LISTINGS_TEST_DATABASE_URL") && set("LISTINGS_TEST_REDIS_URL") {
        println!("cargo::rustc-cfg=listings_test_services");
    }
}
