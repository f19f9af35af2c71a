//! Handing rank 0's NCCL unique id (128 opaque bytes) to every other rank before the process
//! group exists: over TCP at `MASTER_ADDR:MASTER_PORT` (torchrun's convention: rank 0 listens),
//! or through a file on a path every node sees (a cluster's shared file system).
//!
//! Both are plain bytes with a magic prefix, so they are tested here without GPUs or NCCL.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::distributed::DistError;

/// What precedes the id on the wire and in the file: a stale or foreign file or peer is refused.
const MAGIC: &[u8; 8] = b"AJEPAID1";

fn err(msg: String) -> DistError {
    DistError::Rendezvous(msg)
}

/// Rank 0: serves `id` to `world - 1` ranks that connect to `port` on any interface, then
/// returns. Fails after `timeout` if not every rank came.
pub fn serve_tcp(port: u16, world: usize, id: &[u8], timeout: Duration) -> Result<(), DistError> {
    let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
        err(format!(
            "rank 0 cannot listen on port {port}: {e} (is MASTER_PORT in use?)"
        ))
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| err(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let mut served = 0;
    while served + 1 < world {
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false).map_err(|e| err(e.to_string()))?;
                s.set_write_timeout(Some(Duration::from_secs(10)))
                    .map_err(|e| err(e.to_string()))?;
                let len = (id.len() as u32).to_le_bytes();
                s.write_all(MAGIC)
                    .and_then(|_| s.write_all(&len))
                    .and_then(|_| s.write_all(id))
                    .map_err(|e| err(format!("sending the id: {e}")))?;
                served += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(err(format!(
                        "only {served} of {} ranks connected to port {port} within {} s",
                        world - 1,
                        timeout.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(err(format!("accepting on port {port}: {e}"))),
        }
    }
    Ok(())
}

/// Ranks 1..: connects to rank 0 at `addr:port` (retrying until `timeout`: rank 0 may start
/// later) and reads the id.
pub fn fetch_tcp(addr: &str, port: u16, timeout: Duration) -> Result<Vec<u8>, DistError> {
    let deadline = Instant::now() + timeout;
    let target = format!("{addr}:{port}");
    loop {
        let attempt = target
            .to_socket_addrs()
            .map_err(|e| err(format!("MASTER_ADDR {target}: {e}")))
            .and_then(|mut addrs| {
                addrs
                    .next()
                    .ok_or_else(|| err(format!("MASTER_ADDR {target} resolves to nothing")))
            })
            .and_then(|sa| {
                TcpStream::connect_timeout(&sa, Duration::from_secs(2))
                    .map_err(|e| err(format!("connecting to {target}: {e}")))
            });
        match attempt {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .map_err(|e| err(e.to_string()))?;
                return read_framed(&mut s, &target);
            }
            Err(e) if Instant::now() > deadline => {
                return Err(err(format!(
                    "rank 0 did not answer within {} s: {e}",
                    timeout.as_secs()
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn read_framed(r: &mut impl Read, from: &str) -> Result<Vec<u8>, DistError> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head)
        .map_err(|e| err(format!("{from}: reading the id: {e}")))?;
    if &head[..8] != MAGIC {
        return Err(err(format!("{from} is not an audio-jepa rendezvous")));
    }
    let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
    if len > 4096 {
        return Err(err(format!("{from}: an id of {len} bytes (at most 4096)")));
    }
    let mut id = vec![0u8; len];
    r.read_exact(&mut id)
        .map_err(|e| err(format!("{from}: reading the id: {e}")))?;
    Ok(id)
}

/// Rank 0: writes `id` to `path` atomically. The file must not exist: a file left by an earlier
/// job would hand its id to this job's ranks (use a fresh path per job, e.g. with the job id).
pub fn publish_file(path: &Path, id: &[u8]) -> Result<(), DistError> {
    if path.exists() {
        return Err(err(format!(
            "{} already exists (left by an earlier job?): remove it or use a path per job",
            path.display()
        )));
    }
    audio_jepa::arrays::write_atomically(path, |w| {
        w.write_all(MAGIC)?;
        w.write_all(&(id.len() as u32).to_le_bytes())?;
        w.write_all(id)
    })
    .map_err(|e| err(format!("writing {}: {e}", path.display())))
}

/// Ranks 1..: waits for rank 0's file at `path` (until `timeout`) and reads the id.
pub fn read_file(path: &Path, timeout: Duration) -> Result<Vec<u8>, DistError> {
    let deadline = Instant::now() + timeout;
    loop {
        // The file appears whole (an atomic rename), so once it opens it is complete.
        match std::fs::File::open(path) {
            Ok(mut f) => return read_framed(&mut f, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => {
                return Err(err(format!(
                    "waiting {} s for {}: {e}",
                    timeout.as_secs(),
                    path.display()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_reaches_every_rank_over_tcp() {
        // A free port: bind to 0, note it, release it.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let id: Vec<u8> = (0..128).map(|i| (i * 7) as u8).collect();
        std::thread::scope(|s| {
            let clients: Vec<_> = (0..3)
                .map(|_| s.spawn(move || fetch_tcp("127.0.0.1", port, Duration::from_secs(20))))
                .collect();
            serve_tcp(port, 4, &id, Duration::from_secs(20)).unwrap();
            for c in clients {
                assert_eq!(c.join().unwrap().unwrap(), id);
            }
        });
    }

    #[test]
    fn the_id_reaches_every_rank_through_a_file_and_a_stale_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nccl-id");
        let id = vec![42u8; 128];
        std::thread::scope(|s| {
            let reader = s.spawn(|| read_file(&path, Duration::from_secs(20)));
            std::thread::sleep(Duration::from_millis(150));
            publish_file(&path, &id).unwrap();
            assert_eq!(reader.join().unwrap().unwrap(), id);
        });
        let again = publish_file(&path, &id).unwrap_err().to_string();
        assert!(again.contains("already exists"), "{again}");
        // A file that is not ours is refused, and nobody waits forever.
        std::fs::write(dir.path().join("other"), b"hello world, not an id").unwrap();
        let foreign = read_file(&dir.path().join("other"), Duration::from_secs(1)).unwrap_err();
        assert!(
            foreign.to_string().contains("not an audio-jepa rendezvous"),
            "{foreign}"
        );
        let missing = read_file(&dir.path().join("never"), Duration::from_millis(300)).unwrap_err();
        assert!(missing.to_string().contains("waiting"), "{missing}");
    }
}
