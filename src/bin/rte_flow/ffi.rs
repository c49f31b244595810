//! The C shim (`csrc/sgf_rte_flow.{c,h}`): `#[repr(C)]` mirrors of its flat structs, its
//! functions, and a `FlowDevice` on one started DPDK port.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::NonNull;

use crate::installer::FlowDevice;
use crate::rule::{Action, Fields, FlatRule, Item};

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SgfFields {
    src: [u8; 16],
    dst: [u8; 16],
    eth_type: u16,
    src_port: u16,
    dst_port: u16,
    proto: u8,
    icmp_type: u8,
    icmp_code: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SgfItem {
    kind: i32,
    has_spec: i32,
    has_last: i32,
    spec: SgfFields,
    mask: SgfFields,
    last: SgfFields,
}

#[repr(C)]
struct SgfAction {
    kind: i32,
    arg: u32,
}

#[repr(C)]
struct SgfRule {
    group: u32,
    priority: u32,
    ingress: i32,
    egress: i32,
    n_items: i32,
    n_actions: i32,
    items: *const SgfItem,
    actions: *const SgfAction,
}

extern "C" {
    fn sgf_protocol_fd() -> c_int;
    fn sgf_eal_init(argc: c_int, argv: *mut *mut c_char, err: *mut c_char, len: usize) -> c_int;
    fn sgf_port_count() -> c_int;
    fn sgf_port_start(port: u16, rxq: u16, txq: u16, err: *mut c_char, len: usize) -> c_int;
    fn sgf_port_queues(port: u16, rxq: *mut u16, txq: *mut u16) -> c_int;
    fn sgf_flow_validate(port: u16, r: *const SgfRule, err: *mut c_char, len: usize) -> c_int;
    fn sgf_flow_create(port: u16, r: *const SgfRule, err: *mut c_char, len: usize) -> *mut c_void;
    fn sgf_flow_destroy(port: u16, flow: *mut c_void, err: *mut c_char, len: usize) -> c_int;
    fn sgf_flow_query_count(
        port: u16,
        flow: *mut c_void,
        hits: *mut u64,
        bytes: *mut u64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn sgf_rx_lengths(port: u16, queue: u16, lengths: *mut u32, max: u16) -> c_int;
    fn sgf_cleanup();
}

/// Moves stdout to stderr (EAL and drivers print there) and returns the original stdout,
/// which carries the JSON answers alone.
pub fn protocol_output() -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: dup/dup2 on the process's own standard descriptors.
    let fd = unsafe { sgf_protocol_fd() };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor from dup() that nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

const ERR_LEN: usize = 512;

/// Calls `f` with an error buffer; the message the shim wrote there.
fn with_err<T>(f: impl FnOnce(*mut c_char, usize) -> T) -> (T, String) {
    let mut buf = vec![0 as c_char; ERR_LEN];
    let out = f(buf.as_mut_ptr(), ERR_LEN);
    // SAFETY: the buffer is zeroed and the shim writes a NUL-terminated string within ERR_LEN.
    let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    (out, msg)
}

fn fields(f: &Fields) -> SgfFields {
    SgfFields {
        src: f.src,
        dst: f.dst,
        eth_type: f.eth_type,
        src_port: f.src_port,
        dst_port: f.dst_port,
        proto: f.proto,
        icmp_type: f.icmp_type,
        icmp_code: f.icmp_code,
    }
}

fn item(i: &Item) -> SgfItem {
    let (spec, mask) = i.spec.map_or_else(
        || (SgfFields::default(), SgfFields::default()),
        |(s, m)| (fields(&s), fields(&m)),
    );
    SgfItem {
        kind: i.kind as i32,
        has_spec: i32::from(i.spec.is_some()),
        has_last: i32::from(i.last.is_some()),
        spec,
        mask,
        last: i.last.as_ref().map_or_else(SgfFields::default, fields),
    }
}

fn action(a: Action) -> SgfAction {
    let (kind, arg) = match a {
        Action::Drop => (1, 0),
        Action::Passthru => (2, 0),
        Action::Queue(q) => (3, u32::from(q)),
        Action::Jump(g) => (4, g),
        Action::Count => (5, 0),
    };
    SgfAction { kind, arg }
}

/// DPDK's environment and one started port. Dropping it closes the port and the EAL.
pub struct DpdkPort {
    port: u16,
}

/// `rte_eal_init` on `args` (argv[0] included), then configure and start `port`.
pub fn open(args: &[String], port: u16, rxq: u16, txq: u16) -> Result<DpdkPort, String> {
    let owned: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| format!("EAL argument {a:?} has a NUL")))
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*mut c_char> = owned.iter().map(|a| a.as_ptr().cast_mut()).collect();
    let argc = c_int::try_from(argv.len()).map_err(|_| "too many EAL arguments".to_string())?;
    // SAFETY: argv points at NUL-terminated strings that outlive the call (EAL may reorder
    // the pointer array, which is ours, and keeps no pointer past init in 22.11).
    let (rc, msg) = with_err(|e, l| unsafe { sgf_eal_init(argc, argv.as_mut_ptr(), e, l) });
    if rc != 0 {
        return Err(msg);
    }
    // SAFETY: EAL is initialised.
    let count = unsafe { sgf_port_count() };
    if i32::from(port) >= count {
        // SAFETY: EAL is initialised; nothing else uses it.
        unsafe { sgf_cleanup() };
        return Err(format!(
            "no DPDK port {port} ({count} ports: check the --vdev args)"
        ));
    }
    // SAFETY: EAL is initialised and the port exists.
    let (rc, msg) = with_err(|e, l| unsafe { sgf_port_start(port, rxq, txq, e, l) });
    if rc != 0 {
        // SAFETY: as above.
        unsafe { sgf_cleanup() };
        return Err(msg);
    }
    Ok(DpdkPort { port })
}

impl DpdkPort {
    /// The rx and tx queues the port is configured with, as DPDK reports them (`None` if it
    /// cannot say).
    pub fn queues(&self) -> Option<(u16, u16)> {
        let (mut rx, mut tx) = (0u16, 0u16);
        // SAFETY: the port is started; the shim writes the two u16s it is given.
        let rc = unsafe { sgf_port_queues(self.port, &mut rx, &mut tx) };
        (rc == 0).then_some((rx, tx))
    }

    /// The lengths of the frames waiting on `queue` (a test aid: which queue a rule sent a
    /// frame to; the frames themselves are freed).
    pub fn receive(&mut self, queue: u16) -> Vec<u32> {
        // One burst a call: some drivers (net_null) always have frames.
        let mut buf = [0u32; 256];
        // SAFETY: buf holds 256 entries and the shim writes at most that many.
        let n = unsafe { sgf_rx_lengths(self.port, queue, buf.as_mut_ptr(), 256) };
        buf[..usize::try_from(n).unwrap_or(0)].to_vec()
    }
}

/// A created flow (the pointer `rte_flow_create` returned).
#[derive(Clone, Copy)]
pub struct Flow(NonNull<c_void>);

impl DpdkPort {
    /// Runs `f` on the rule in the shim's form (the arrays live for the call).
    fn with_rule<T>(r: &FlatRule, f: impl FnOnce(*const SgfRule) -> T) -> T {
        let items: Vec<SgfItem> = r.items.iter().map(item).collect();
        let actions: Vec<SgfAction> = r.actions.iter().copied().map(action).collect();
        let rule = SgfRule {
            group: r.group,
            priority: r.priority,
            ingress: i32::from(r.ingress),
            egress: i32::from(r.egress),
            // Bounded by rule::MAX_ITEMS / MAX_ACTIONS, which parse() enforces.
            n_items: i32::try_from(items.len()).unwrap_or(i32::MAX),
            n_actions: i32::try_from(actions.len()).unwrap_or(i32::MAX),
            items: items.as_ptr(),
            actions: actions.as_ptr(),
        };
        f(&rule)
    }
}

impl FlowDevice for DpdkPort {
    type Handle = Flow;

    fn validate(&mut self, r: &FlatRule) -> Result<(), String> {
        let port = self.port;
        // SAFETY: the rule and its arrays are valid for the call; the port is started.
        let (rc, msg) = Self::with_rule(r, |p| {
            with_err(|e, l| unsafe { sgf_flow_validate(port, p, e, l) })
        });
        if rc == 0 {
            Ok(())
        } else {
            Err(msg)
        }
    }

    fn create(&mut self, r: &FlatRule) -> Result<Flow, String> {
        let port = self.port;
        // SAFETY: as for validate.
        let (flow, msg) = Self::with_rule(r, |p| {
            with_err(|e, l| unsafe { sgf_flow_create(port, p, e, l) })
        });
        NonNull::new(flow).map(Flow).ok_or(msg)
    }

    fn destroy(&mut self, h: Flow) -> Result<(), String> {
        let port = self.port;
        // SAFETY: h came from create on this port and is destroyed once (the installer drops
        // its record with the call).
        let (rc, msg) = with_err(|e, l| unsafe { sgf_flow_destroy(port, h.0.as_ptr(), e, l) });
        if rc == 0 {
            Ok(())
        } else {
            Err(msg)
        }
    }

    fn query_count(&mut self, h: Flow) -> Result<(u64, u64), String> {
        let (mut hits, mut bytes) = (0u64, 0u64);
        let port = self.port;
        // SAFETY: h is a live flow of this port; the out-pointers are valid.
        let (rc, msg) = with_err(|e, l| unsafe {
            sgf_flow_query_count(port, h.0.as_ptr(), &mut hits, &mut bytes, e, l)
        });
        if rc == 0 {
            Ok((hits, bytes))
        } else {
            Err(msg)
        }
    }
}

impl Drop for DpdkPort {
    fn drop(&mut self) {
        // SAFETY: EAL was initialised by open(); no flow handle outlives the installer.
        unsafe { sgf_cleanup() };
    }
}
