//! Several `serve` processes on one database (and, in Redis mode, one Redis): a write
//! through the CLI is seen by every one of them on its next request.

use crate::every_redis;
use crate::support::TestEnv;
use crate::support::binary::stderr;

every_redis!(every_server_sees_a_cli_write_on_its_next_request);

async fn every_server_sees_a_cli_write_on_its_next_request(env: TestEnv) {
    let servers = [env.serve(&[]), env.serve(&[])];
    for server in &servers {
        assert_eq!(server.get("/properties/").await.json()["count"], 0);
        assert_eq!(
            server.get("/properties/").await.x_cache,
            "HIT",
            "{}",
            server.log()
        );
    }
    let created = env.create_via_cli("Beach villa", "500000", "Malindi");
    assert!(created.status.success(), "{}", stderr(&created));
    for server in &servers {
        let response = server.get("/properties/").await;
        assert_eq!(
            response.json()["data"][0]["title"],
            "Beach villa",
            "server {}",
            server.address
        );
    }
}
