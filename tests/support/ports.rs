//! Ports for servers that a test starts in another process (`conduit run`, chromedriver), which
//! therefore cannot be handed a bound listener, and an address that can never accept a
//! connection. "Bind port 0, read the port, release it" is racy: between the release and the
//! child's bind, the kernel may give that port to any other process as an ephemeral port
//! (a `bind(0)` or an outgoing connection). So the ports given here come from below the
//! kernel's ephemeral range, which the kernel never hands out by itself, and each is claimed with
//! a file lock that every test process on the machine honours, held until this process exits.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::sync::Mutex;

/// The lowest port handed out: above the ports that services are commonly configured on.
const LOWEST: u16 = 20_000;

/// The claims of this process: their locks are held until it exits.
static CLAIMS: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A loopback port no other test process holds, outside the kernel's ephemeral range, and free
/// on every interface when claimed; it stays claimed for the rest of this test process.
pub fn free_port() -> u16 {
    let (below, _) = ephemeral_range();
    let dir = std::env::temp_dir().join("conduit-test-ports");
    std::fs::create_dir_all(&dir).expect("the port-claim folder");
    let span = below.saturating_sub(LOWEST).max(1);
    let start = fastrand::u16(0..span);
    for offset in 0..span {
        let port = LOWEST + (start + offset) % span;
        if let Some(claim) = claim(&dir, port) {
            CLAIMS.lock().expect("port claims").push(claim);
            return port;
        }
    }
    panic!(
        "no free port between {LOWEST} and {below} (claims in {})",
        dir.display()
    );
}

/// Claims `port` if no other test process holds it and nothing listens on it now.
fn claim(dir: &std::path::Path, port: u16) -> Option<File> {
    let path: PathBuf = dir.join(format!("{port}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    file.try_lock().ok()?;
    // Free on every interface, so a config may listen on 0.0.0.0 as well as on loopback.
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).ok()?;
    Some(file)
}

/// The kernel's ephemeral port range (Linux's default when it cannot be read).
fn ephemeral_range() -> (u16, u16) {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut numbers = text
        .split_whitespace()
        .filter_map(|n| n.parse::<u16>().ok());
    match (numbers.next(), numbers.next()) {
        (Some(low), Some(high)) if low > LOWEST => (low, high),
        _ => (32_768, 60_999),
    }
}

/// A loopback address bound by this test and never listened on: a connection to it is refused
/// for as long as the value lives, and no other process can take the port meanwhile.
pub struct UnlistenedPort {
    socket: socket2::Socket,
}

impl UnlistenedPort {
    /// The address (127.0.0.1:port).
    pub fn address(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .ok()
            .and_then(|address| address.as_socket())
            .expect("a bound IPv4 socket")
    }
}

/// Binds a loopback TCP socket on a port the kernel picks, without listening on it.
pub fn unlistened_port() -> UnlistenedPort {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    socket
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .expect("a loopback port");
    UnlistenedPort { socket }
}
