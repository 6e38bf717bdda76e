//! Small workloads the scenarios need that no packaged tool does quite right, run as
//! `xtask scenario-worker KIND` child processes (so limits set on them stay theirs). Each runs
//! until killed.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    time::Duration,
};

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Worker {
    /// Open /dev/null until the descriptor limit, close everything, again.
    OpenFiles,
    /// Accept connections and answer each with one line.
    Listen { addr: SocketAddr },
    /// Connect, read the answer, close, ten times a second: a scraper.
    Poll { addr: SocketAddr },
    /// Connect and close as fast as ports allow; on failure, retry after a moment.
    ConnectLoop { addr: SocketAddr },
    /// Write 4 KiB blocks at random offsets of DEVICE with direct I/O, 200 a second, carrying
    /// on through errors (fio stops at the first ENOSPC).
    RandomWrites { device: PathBuf },
    /// Append to a file in DIR until the file system is full, then keep retrying.
    FillDisk { dir: PathBuf },
}

pub fn run(worker: Worker) -> anyhow::Result<()> {
    match worker {
        Worker::OpenFiles => loop {
            let mut files = Vec::new();
            while let Ok(file) = fs::File::open("/dev/null") {
                files.push(file);
            }
            drop(files);
            std::thread::sleep(Duration::from_millis(5));
        },
        Worker::Listen { addr } => {
            let listener = TcpListener::bind(addr)?;
            for mut stream in listener.incoming().flatten() {
                let _ = stream.write_all(b"ok\n");
                // Wait for the client to close first, as servers whose clients hang up do:
                // the client's side then holds its port in TIME_WAIT.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut rest = [0u8; 64];
                while matches!(stream.read(&mut rest), Ok(n) if n > 0) {}
            }
            Ok(())
        }
        Worker::Poll { addr } => loop {
            if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut answer = [0u8; 16];
                let _ = stream.read(&mut answer);
            }
            std::thread::sleep(Duration::from_millis(100));
        },
        Worker::ConnectLoop { addr } => loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                // Closing first puts the connection in TIME_WAIT on our side, holding the port.
                Ok(stream) => drop(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        },
        Worker::RandomWrites { device } => {
            use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
            let file = fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&device)?;
            // A block device's metadata says 0 bytes; its end says how big it is.
            let size = std::io::Seek::seek(&mut &file, std::io::SeekFrom::End(0))?;
            let blocks = (size / 4096).max(1);
            // Direct I/O wants a buffer aligned to the block size.
            let layout = std::alloc::Layout::from_size_align(4096, 4096)?;
            // SAFETY: a non-zero size layout; the buffer lives until the loop ends (never).
            let buffer = unsafe {
                let pointer = std::alloc::alloc_zeroed(layout);
                anyhow::ensure!(!pointer.is_null(), "out of memory");
                std::slice::from_raw_parts(pointer, 4096)
            };
            let mut state = std::process::id() as u64 | 1;
            loop {
                // xorshift: enough randomness to spread writes over the device.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let _ = file.write_at(buffer, (state % blocks) * 4096);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Worker::FillDisk { dir } => {
            let mut file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("app.log"))?;
            let chunk = vec![b'x'; 64 << 10];
            loop {
                if file.write_all(&chunk).is_err() {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
}
