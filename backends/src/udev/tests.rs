use super::*;

fn message(action: &str, devpath: &str, subsystem: &str, extra: &[&str]) -> Vec<u8> {
    let mut m = format!(
        "{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0SUBSYSTEM={subsystem}\0SEQNUM=4242\0"
    );
    for e in extra {
        m.push_str(e);
        m.push('\0');
    }
    m.into_bytes()
}

#[test]
fn kernel_messages_parse_and_filter() {
    let vf = message(
        "add",
        "/devices/pci0000:3a/0000:3a:00.0/0000:3b:01.0",
        "pci",
        &["PCI_SLOT_NAME=0000:3b:01.0"],
    );
    let event = parse_uevent(&vf).unwrap();
    assert_eq!(event.action, "add");
    assert_eq!(event.subsystem, "pci");
    assert_eq!(event.vars["PCI_SLOT_NAME"], "0000:3b:01.0");
    assert!(event.is_relevant());
    for (action, subsystem, relevant) in [
        ("bind", "pci", true),
        ("remove", "infiniband", true),
        ("add", "infiniband_verbs", true),
        ("change", "drm", true),
        ("move", "net", true),
        ("add", "usb", false),
        ("online", "cpu", false),
        ("add", "block", false),
    ] {
        let e = parse_uevent(&message(action, "/devices/x", subsystem, &[])).unwrap();
        assert_eq!(e.is_relevant(), relevant, "{action} {subsystem}");
    }
    // udevd's re-broadcast and garbage are not kernel uevents.
    assert_eq!(parse_uevent(b"libudev\0\xfe\xed\xca\xfe"), None);
    assert_eq!(parse_uevent(b""), None);
    assert_eq!(parse_uevent(b"add@/x\0NOACTION=1\0"), None);
    assert_eq!(parse_uevent(&[0xff; 64]), None);
}

#[test]
fn a_burst_of_64_vf_creations_is_one_rescan() {
    let quiet = Duration::from_millis(500);
    let mut debounce = Debounce::new(quiet, Duration::from_secs(5));
    let start = Instant::now();
    let mut rescans = 0;
    assert_eq!(debounce.timeout(), None, "no burst: wait for events");
    for i in 0..64u64 {
        let now = start + Duration::from_millis(3 * i);
        debounce.event(now);
        rescans += usize::from(debounce.due(now + Duration::from_millis(1)));
    }
    assert_eq!(debounce.timeout(), Some(quiet));
    assert_eq!(rescans, 0, "still bursting");
    assert!(debounce.due(start + Duration::from_millis(3 * 63 + 500)));
    assert!(
        !debounce.due(start + Duration::from_secs(10)),
        "one rescan per burst"
    );
}

#[test]
fn an_endless_stream_still_rescans_after_max_wait() {
    let mut debounce = Debounce::new(Duration::from_millis(500), Duration::from_secs(2));
    let start = Instant::now();
    let mut rescans = 0;
    for i in 0..100u64 {
        let now = start + Duration::from_millis(100 * i);
        debounce.event(now);
        rescans += usize::from(debounce.due(now));
    }
    assert_eq!(rescans, 4, "every 2 s during 10 s of events");
}

proptest::proptest! {
    #[test]
    fn parsing_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = parse_uevent(&bytes);
    }
}

#[test]
fn the_socket_opens_or_says_why() {
    // Sandboxes may refuse netlink (a seccomp or LSM denial, a kernel or sandbox without the
    // family or its uevent protocol); a node does not. Either way: no panic, and the error is the
    // kernel's refusal, not another failure.
    use rustix::io::Errno;
    match UeventSocket::open() {
        Ok(socket) => assert!(socket.next(Some(Duration::from_millis(10))).is_ok()),
        Err(e) => {
            let refusals = [
                Errno::PERM,
                Errno::ACCESS,
                Errno::PROTONOSUPPORT,
                Errno::AFNOSUPPORT,
                Errno::SOCKTNOSUPPORT,
            ];
            assert!(
                refusals
                    .iter()
                    .any(|refusal| e.raw_os_error() == Some(refusal.raw_os_error())),
                "{e} ({e:?})"
            );
        }
    }
}

#[test]
fn an_overflowed_socket_means_a_rescan_and_the_watch_goes_on() {
    // The kernel drops uevents when the socket's buffer is full and says so once with ENOBUFS; the
    // socket keeps working. The lost events may have been relevant, so the watch rescans and goes on.
    let enobufs = || io::Error::from_raw_os_error(rustix::io::Errno::NOBUFS.raw_os_error());
    let mut script = vec![Err(enobufs()), Ok(None), Err(enobufs()), Ok(None)].into_iter();
    let mut rescans = 0;
    let error = watch_source(
        |_| {
            script
                .next()
                .unwrap_or_else(|| Err(io::Error::other("script ended")))
        },
        Duration::ZERO,
        Duration::from_secs(5),
        || {
            rescans += 1;
            true
        },
    );
    assert_eq!(rescans, 2, "one rescan per overflow");
    assert_eq!(error.to_string(), "script ended");
    assert!(!is_overflow(&io::Error::other("x")));
    assert!(!is_overflow(&io::Error::from_raw_os_error(
        rustix::io::Errno::BADF.raw_os_error()
    )));
}

/// The root tests share the kernel's uevent group: one floods it (and overflows sockets) while
/// the other counts on its messages arriving, so they run one at a time.
static UEVENT_GROUP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Needs root: writes `change` to loopback's `uevent` to make the kernel send uevents.
#[test]
#[ignore = "needs root (writes /sys/class/net/lo/uevent)"]
fn a_real_overflow_of_the_uevent_socket_is_survived_needs_root() {
    let _group = UEVENT_GROUP.lock().unwrap_or_else(|e| e.into_inner());
    let socket = UeventSocket::open().expect("the uevent socket");
    let asked = rustix::net::sockopt::socket_recv_buffer_size(&socket.fd).unwrap();
    assert!(asked >= 2 * 1024 * 1024, "the buffer was raised: {asked}");
    // Shrink it to the kernel's minimum so that a few hundred uevents overflow it.
    rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket.fd, 0).unwrap();
    for _ in 0..200 {
        std::fs::write("/sys/class/net/lo/uevent", "change").expect("loopback's uevent");
    }
    let overflowed = socket.next(Some(Duration::from_millis(100)));
    assert!(
        overflowed.as_ref().is_err_and(is_overflow),
        "the kernel reports the overflow: {overflowed:?}"
    );
    // The kernel reports the next overflow only once the queue was read empty.
    while socket
        .next(Some(Duration::from_millis(50)))
        .unwrap()
        .is_some()
    {}
    // The watch on the same socket: the next overflow is a rescan, not the end of the watch.
    for _ in 0..200 {
        std::fs::write("/sys/class/net/lo/uevent", "change").expect("loopback's uevent");
    }
    let mut rescans = 0;
    let error = watch(
        socket,
        Duration::from_millis(50),
        Duration::from_secs(1),
        || {
            rescans += 1;
            false
        },
    );
    assert_eq!(rescans, 1);
    assert_eq!(error.to_string(), "watch stopped");
}

/// Needs root (CAP_NET_ADMIN): another process's message to the kernel's uevent group, in the
/// kernel's format, is not taken for a uevent.
#[test]
#[ignore = "needs root (sends to the kernel uevent group)"]
fn a_uevent_sent_by_a_process_is_not_the_kernels_needs_root() {
    use rustix::net::netlink::SocketAddrNetlink;
    use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType, netlink};
    let _group = UEVENT_GROUP.lock().unwrap_or_else(|e| e.into_inner());
    let socket = UeventSocket::open().expect("the uevent socket");
    // A witness on the group, reading raw: it shows the forged message was delivered.
    let witness = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::KOBJECT_UEVENT),
    )
    .unwrap();
    rustix::net::bind(&witness, &SocketAddrNetlink::new(0, 1)).unwrap();
    rustix::net::sockopt::set_socket_timeout(
        &witness,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_millis(100)),
    )
    .unwrap();
    let sender = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::KOBJECT_UEVENT),
    )
    .unwrap();
    let forged = b"add@/devices/forged\0ACTION=add\0DEVPATH=/devices/forged\0SUBSYSTEM=pci\0";
    let group = SocketAddrNetlink::new(0, 1);
    // Sent until the witness has one (the host's own uevents may overflow a socket meanwhile).
    let mut delivered = false;
    let mut buffer = vec![0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !delivered && Instant::now() < deadline {
        rustix::net::sendto(&sender, forged, SendFlags::empty(), &group)
            .expect("send to the group");
        loop {
            match rustix::net::recv(&witness, &mut buffer, rustix::net::RecvFlags::empty()) {
                Ok((n, _)) => {
                    delivered |= buffer
                        .get(..n)
                        .is_some_and(|m| m.starts_with(b"add@/devices/forged"));
                }
                Err(rustix::io::Errno::NOBUFS) => {}
                Err(_) => break,
            }
        }
    }
    assert!(delivered, "the forged message reached the group");
    // The watch's socket had them all in its queue: none is taken for a uevent.
    loop {
        match socket.next(Some(Duration::from_millis(300))) {
            Ok(Some(event)) => assert_ne!(event.devpath, "/devices/forged", "{event:?}"),
            Ok(None) => break,
            Err(e) if is_overflow(&e) => {}
            Err(e) => panic!("{e}"),
        }
    }
}
