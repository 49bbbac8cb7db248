//! TCP over the ring: [`TcpListener`] and [`TcpStream`] with owned-buffer reads and writes.
//!
//! Sockets are created, bound and configured with ordinary syscalls (they never block); every
//! operation that waits (accept, connect, recv, send, sendmsg, shutdown, close) is an io_uring
//! request. Sockets stay in blocking mode: with FAST_POLL the kernel tries each request once and,
//! if it would block, arms an internal poll and retries on readiness, with no worker thread.
//!
//! Reads append to the buffer's spare capacity (see [`crate::buf`]). Writes send the buffer's
//! initialised bytes and use MSG_NOSIGNAL, so a peer that went away gives `EPIPE`, never SIGPIPE.
//! All methods take `&self`: share a stream between a reading and a writing task with `Rc`.

use std::cell::Cell;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use io_uring::{cqueue, opcode, types};

use crate::buf::{IoBuf, IoBufMut};
use crate::op::Op;

/// A listening TCP socket.
#[derive(Debug)]
pub struct TcpListener {
    fd: OwnedFd,
    local_addr: SocketAddr,
}

impl TcpListener {
    /// Binds to `addr` (port 0 picks a free port; see [`TcpListener::local_addr`]) with
    /// SO_REUSEADDR and a backlog of 1024.
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        Self::bind_with(addr, false, 1024)
    }

    /// Binds with optional SO_REUSEPORT (several listeners, typically one per worker thread,
    /// sharing a port; the kernel spreads connections) and an explicit backlog.
    pub fn bind_with(addr: SocketAddr, reuse_port: bool, backlog: u32) -> io::Result<TcpListener> {
        let fd = new_socket(&addr)?;
        set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        if reuse_port {
            set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        }
        let (storage, len) = socket_addr_to_raw(&addr);
        // SAFETY: `storage` holds a valid sockaddr of `len` bytes for the synchronous call.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&storage as *const libc::sockaddr_storage).cast(),
                len,
            )
        })
        .map_err(|error| annotate(error, &format!("bind {addr}")))?;
        let backlog = backlog.min(i32::MAX as u32) as i32;
        // SAFETY: plain syscall on a socket we own.
        cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
        let local_addr = local_addr_of(fd.as_raw_fd())?;
        Ok(TcpListener { fd, local_addr })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let address = Box::new(RawAddress {
            storage: zeroed_storage(),
            len: mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        });
        let fd = self.fd.as_raw_fd();
        let op = Op::submit(address, |address| {
            opcode::Accept::new(
                types::Fd(fd),
                (&mut address.storage as *mut libc::sockaddr_storage).cast(),
                &mut address.len,
            )
            .flags(libc::SOCK_CLOEXEC)
            .build()
        })
        .map_err(|(error, _)| error)?;
        let (completion, address) = op.await;
        let fd = completion.into_result()? as RawFd;
        // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
        let stream = TcpStream::from_fd(unsafe { OwnedFd::from_raw_fd(fd) });
        let peer = raw_to_socket_addr(&address.storage, address.len)?;
        Ok((stream, peer))
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

struct RawAddress {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

/// `IORING_RECVSEND_POLL_FIRST`: arm the readiness poll before trying the receive at all.
const RECVSEND_POLL_FIRST: u16 = 1;

/// A connected TCP socket.
#[derive(Debug)]
pub struct TcpStream {
    fd: OwnedFd,
    /// The previous receive drained the socket (its completion lacked
    /// `IORING_CQE_F_SOCK_NONEMPTY`), so the next one most likely finds nothing yet: ask the
    /// kernel to wait for readiness first instead of trying, failing and then waiting.
    drained: Cell<bool>,
}

/// Data of a `sendmsg`: the buffers, their iovec array and the header pointing at it, all on the
/// heap so the kernel's pointers stay valid while the future moves.
struct VectoredData<B> {
    bufs: Vec<B>,
    iovecs: Vec<libc::iovec>,
    header: Box<libc::msghdr>,
}

impl TcpStream {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let fd = new_socket(&addr)?;
        let (storage, len) = socket_addr_to_raw(&addr);
        let raw_fd = fd.as_raw_fd();
        let op = Op::submit(Box::new(storage), |storage| {
            opcode::Connect::new(
                types::Fd(raw_fd),
                (&**storage as *const libc::sockaddr_storage).cast(),
                len,
            )
            .build()
        })
        .map_err(|(error, _)| error)?;
        let (completion, _) = op.await;
        completion
            .into_result()
            .map_err(|error| annotate(error, &format!("connect to {addr}")))?;
        Ok(TcpStream::from_fd(fd))
    }

    fn from_fd(fd: OwnedFd) -> TcpStream {
        TcpStream {
            fd,
            drained: Cell::new(false),
        }
    }

    /// Takes over a connected std socket.
    pub fn from_std(stream: std::net::TcpStream) -> TcpStream {
        TcpStream::from_fd(OwnedFd::from(stream))
    }

    /// Reads once into the spare capacity of `buf` (after its initialised bytes) and extends its
    /// initialised part. `Ok(0)` means the peer closed its side. A buffer without spare capacity
    /// is an `InvalidInput` error (it would be indistinguishable from end of stream).
    pub async fn read<B: IoBufMut>(&self, mut buf: B) -> (io::Result<usize>, B) {
        let init = buf.bytes_init();
        let room = buf.bytes_total() - init;
        if room == 0 {
            let error = io::Error::new(
                io::ErrorKind::InvalidInput,
                "read buffer has no spare capacity; reserve room before reading",
            );
            return (Err(error), buf);
        }
        let fd = self.fd.as_raw_fd();
        let len = room.min(u32::MAX as usize) as u32;
        // SAFETY: `init <= bytes_total()`, so the pointer stays inside the buffer. The buffer
        // moves into the `Op` below, which owns it until the completion arrives (if the `Op` is
        // dropped first, the driver keeps it until then), and an `IoBuf`'s storage never moves.
        let ptr = unsafe { buf.stable_mut_ptr().add(init) };
        let ioprio = if self.drained.get() {
            RECVSEND_POLL_FIRST
        } else {
            0
        };
        let op = match Op::submit(buf, |_| {
            opcode::Recv::new(types::Fd(fd), ptr, len)
                .ioprio(ioprio)
                .build()
        }) {
            Ok(op) => op,
            Err((error, buf)) => return (Err(error), buf),
        };
        let (completion, mut buf) = op.await;
        self.drained
            .set(completion.result > 0 && !cqueue::sock_nonempty(completion.flags));
        match completion.into_result() {
            Ok(read) => {
                // SAFETY: the kernel wrote `read` bytes right after the initialised part.
                unsafe { buf.set_init(init + read as usize) };
                (Ok(read as usize), buf)
            }
            Err(error) => (Err(error), buf),
        }
    }

    /// Sends once from the initialised bytes of `buf`; may send fewer bytes than there are.
    pub async fn write<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        let fd = self.fd.as_raw_fd();
        let ptr = buf.stable_ptr();
        let len = buf.bytes_init().min(u32::MAX as usize) as u32;
        let op = match Op::submit(buf, |_| {
            opcode::Send::new(types::Fd(fd), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        }) {
            Ok(op) => op,
            Err((error, buf)) => return (Err(error), buf),
        };
        let (completion, buf) = op.await;
        (completion.into_result().map(|sent| sent as usize), buf)
    }

    /// Sends all initialised bytes of `buf`.
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> (io::Result<()>, B) {
        let total = buf.bytes_init();
        let mut written = 0;
        let mut buf = buf;
        while written < total {
            let (result, slice) = self.write(buf.slice(written..)).await;
            buf = slice.into_inner();
            match result {
                Ok(0) => {
                    let error = io::Error::new(io::ErrorKind::WriteZero, "peer accepts no data");
                    return (Err(error), buf);
                }
                Ok(sent) => written += sent,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return (Err(error), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Sends from several buffers in one `sendmsg`; may send fewer bytes than there are.
    pub async fn writev<B: IoBuf>(&self, bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
        self.writev_from(bufs, 0).await
    }

    /// Sends every initialised byte of every buffer, in order.
    pub async fn writev_all<B: IoBuf>(&self, bufs: Vec<B>) -> (io::Result<()>, Vec<B>) {
        let total: usize = bufs.iter().map(|buf| buf.bytes_init()).sum();
        let mut written = 0;
        let mut bufs = bufs;
        while written < total {
            let (result, returned) = self.writev_from(bufs, written).await;
            bufs = returned;
            match result {
                Ok(0) => {
                    let error = io::Error::new(io::ErrorKind::WriteZero, "peer accepts no data");
                    return (Err(error), bufs);
                }
                Ok(sent) => written += sent,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return (Err(error), bufs),
            }
        }
        (Ok(()), bufs)
    }

    /// One `sendmsg` of the bytes of `bufs` after the first `skip` bytes.
    async fn writev_from<B: IoBuf>(
        &self,
        bufs: Vec<B>,
        skip: usize,
    ) -> (io::Result<usize>, Vec<B>) {
        let mut iovecs = Vec::with_capacity(bufs.len().min(libc::UIO_MAXIOV as usize));
        let mut skip = skip;
        for buf in &bufs {
            let len = buf.bytes_init();
            if skip >= len {
                skip -= len;
                continue;
            }
            if iovecs.len() == libc::UIO_MAXIOV as usize {
                break;
            }
            iovecs.push(libc::iovec {
                // SAFETY: `skip < len`, inside the buffer's initialised bytes. `bufs` moves with
                // this array into the `Op`'s `VectoredData`, owned until the completion arrives.
                iov_base: unsafe { buf.stable_ptr().add(skip) } as *mut libc::c_void,
                iov_len: len - skip,
            });
            skip = 0;
        }
        if iovecs.is_empty() {
            return (Ok(0), bufs);
        }
        // SAFETY: msghdr is plain data; all-zero is a valid empty header. Boxed, it stays put
        // in the `Op`'s data (with the iovecs it points at) until the completion arrives.
        let mut header: Box<libc::msghdr> = Box::new(unsafe { mem::zeroed() });
        header.msg_iov = iovecs.as_mut_ptr();
        header.msg_iovlen = iovecs.len() as _;
        let data = VectoredData {
            bufs,
            iovecs,
            header,
        };
        let fd = self.fd.as_raw_fd();
        let op = match Op::submit(data, |data| {
            opcode::SendMsg::new(types::Fd(fd), &*data.header)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
        }) {
            Ok(op) => op,
            Err((error, data)) => return (Err(error), data.bufs),
        };
        let (completion, data) = op.await;
        debug_assert!(!data.iovecs.is_empty());
        (
            completion.into_result().map(|sent| sent as usize),
            data.bufs,
        )
    }

    /// Shuts down the read, write or both halves.
    pub async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        let fd = self.fd.as_raw_fd();
        let op = Op::submit((), |_| opcode::Shutdown::new(types::Fd(fd), how).build())
            .map_err(|(error, _)| error)?;
        let (completion, ()) = op.await;
        completion.into_result().map(drop)
    }

    /// Closes the socket through the ring and reports the result (dropping the stream closes it
    /// too, synchronously and silently).
    pub async fn close(self) -> io::Result<()> {
        close_fd(self.fd).await
    }

    /// Enables or disables TCP_NODELAY (send small writes at once instead of coalescing them).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        set_int_option(
            &self.fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            nodelay as i32,
        )
    }

    /// Whether TCP_NODELAY is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        let mut value: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` live on the stack for the synchronous call.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        Ok(value != 0)
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        local_addr_of(self.fd.as_raw_fd())
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        let mut storage = zeroed_storage();
        let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `storage` and `len` live on the stack for the synchronous call.
        cvt(unsafe {
            libc::getpeername(
                self.fd.as_raw_fd(),
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        })?;
        raw_to_socket_addr(&storage, len)
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl IntoRawFd for TcpStream {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

/// Closes `fd` through the ring.
pub(crate) async fn close_fd(fd: OwnedFd) -> io::Result<()> {
    let raw = fd.into_raw_fd();
    // If submission fails the descriptor comes back and is closed synchronously on drop.
    let op = Op::submit(raw, |raw| opcode::Close::new(types::Fd(*raw)).build()).map_err(
        |(error, raw)| {
            // SAFETY: the close was never submitted, so we still own the descriptor.
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
            error
        },
    )?;
    let (completion, _) = op.await;
    completion.into_result().map(drop)
}

fn new_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain syscall; the result is checked before use.
    let fd = cvt(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_int_option(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` lives on the stack for the synchronous call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn local_addr_of(fd: RawFd) -> io::Result<SocketAddr> {
    let mut storage = zeroed_storage();
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` live on the stack for the synchronous call.
    cvt(unsafe {
        libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    raw_to_socket_addr(&storage, len)
}

fn cvt(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

fn annotate(error: io::Error, what: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid (AF_UNSPEC) value.
    unsafe { mem::zeroed() }
}

fn socket_addr_to_raw(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let mut storage = zeroed_storage();
    let len = match addr {
        SocketAddr::V4(addr) => {
            let raw = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: addr.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(addr.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), raw) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(addr) => {
            let raw = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: addr.port().to_be(),
                sin6_flowinfo: addr.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: addr.ip().octets(),
                },
                sin6_scope_id: addr.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), raw) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn raw_to_socket_addr(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> io::Result<SocketAddr> {
    match storage.ss_family as i32 {
        libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is long enough.
            let raw: libc::sockaddr_in =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv4Addr::from(raw.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(raw.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, and it is long enough.
            let raw: libc::sockaddr_in6 =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv6Addr::from(raw.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(raw.sin6_port),
                raw.sin6_flowinfo,
                raw.sin6_scope_id,
            )))
        }
        family => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected socket address family {family} (length {len})"),
        )),
    }
}
