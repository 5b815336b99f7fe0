//! Issue 12, item 4: one client that keeps reconnecting to the metrics endpoint and never sends
//! a request must not starve the scraper. Against a real `node run --metrics`.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cordon_tests::{Net, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connections the hog keeps open from 127.0.0.1 (more than the endpoint's 8 slots).
const HOG_CONNECTIONS: usize = 16;
/// Scrapes from 127.0.0.2; every one must be answered.
const SCRAPES: usize = 5;

/// Connects to `addr` from 127.0.0.2, asks for /metrics and returns what came back.
async fn scrape(addr: SocketAddr) -> Result<String, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind("127.0.0.2:0".parse().unwrap())
        .map_err(|e| e.to_string())?;
    let mut stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    stream
        .read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn a_client_holding_connections_does_not_starve_the_scraper() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let node = net.start_node("metrics", &["mainnet"], &["--metrics", &addr.to_string()]);

    // The hog: connections that send nothing, each replaced as soon as the node drops it.
    let stop = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicU64::new(0));
    let hogs: Vec<_> = (0..HOG_CONNECTIONS)
        .map(|_| {
            let (stop, held) = (stop.clone(), held.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    held.fetch_add(1, Ordering::Relaxed);
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let _ = s.read(&mut [0u8; 64]);
                    // Dropped: back at once (a little pause keeps ports from running out).
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    // Let the hog take every slot it can (the old endpoint kept each for 5 s).
    std::thread::sleep(Duration::from_secs(2));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut failures = Vec::new();
    for i in 0..SCRAPES {
        let got = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(15), scrape(addr))
                .await
                .unwrap_or_else(|_| Err("no answer within 15 s".into()))
        });
        match got {
            Ok(body) if body.starts_with("HTTP/1.1 200") && body.contains("cordon_") => {}
            Ok(body) => failures.push(format!(
                "scrape {i}: {:?}",
                body.chars().take(80).collect::<String>()
            )),
            Err(e) => failures.push(format!("scrape {i}: {e}")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let opened = held.load(Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
    eprintln!("the hog opened {opened} connections; scrape failures: {failures:?}");
    assert!(
        opened >= HOG_CONNECTIONS as u64,
        "the hog did not run ({opened} connections)"
    );
    assert!(failures.is_empty(), "the scraper was starved: {failures:?}");
    // The node is still up and answers its owner.
    assert!(node.status()["peer_id"].is_string());
}
