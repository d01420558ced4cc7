//! The few libvirt C calls the agent makes, loaded with `dlopen` on first use.
//!
//! Why not link libvirt (the `virt` crate did): linking maps libvirt and its whole dependency tree
//! (gnutls, libcrypto, glib, libicu, libssh, krb5, libxml2, libcurl, …) into every `hostagent`
//! process at exec, ~10 MiB of resident code in a daemon whose own memory is ~5 MiB, even on a
//! host that defines no guests. And a host without libvirt could not run the binary at all, not
//! even `hostagent check` to say that libvirt is missing. Loaded on first use, libvirt costs
//! nothing until a guest is managed, and its absence is an error message.
//!
//! Every function here is a thin, checked wrapper: pointers returned by libvirt are owned by a
//! type that frees them, strings libvirt allocates are copied and freed at once.

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The library's SONAME (package libvirt0 on Debian, libvirt-libs on Fedora).
const LIBRARY: &CStr = c"libvirt.so.0";

type ConnPtr = *mut c_void;
type DomPtr = *mut c_void;
type PoolPtr = *mut c_void;
type VolPtr = *mut c_void;

/// `virNodeInfo` (libvirt-host.h).
#[repr(C)]
struct NodeInfo {
    model: [c_char; 32],
    memory: c_ulong,
    cpus: c_uint,
    mhz: c_uint,
    nodes: c_uint,
    sockets: c_uint,
    cores: c_uint,
    threads: c_uint,
}

/// The leading fields of `virError` (virterror.h); only these are read.
#[repr(C)]
struct ErrorHead {
    code: c_int,
    domain: c_int,
    message: *const c_char,
}

/// Function pointers resolved from the library. The library stays loaded for the life of the
/// process (never `dlclose`d), so the pointers stay valid.
struct Api {
    connect_open: unsafe extern "C" fn(*const c_char) -> ConnPtr,
    connect_close: unsafe extern "C" fn(ConnPtr) -> c_int,
    list_all_domains: unsafe extern "C" fn(ConnPtr, *mut *mut DomPtr, c_uint) -> c_int,
    domain_capabilities: unsafe extern "C" fn(
        ConnPtr,
        *const c_char,
        *const c_char,
        *const c_char,
        *const c_char,
        c_uint,
    ) -> *mut c_char,
    node_info: unsafe extern "C" fn(ConnPtr, *mut NodeInfo) -> c_int,
    capabilities: unsafe extern "C" fn(ConnPtr) -> *mut c_char,
    lookup_by_name: unsafe extern "C" fn(ConnPtr, *const c_char) -> DomPtr,
    define_xml: unsafe extern "C" fn(ConnPtr, *const c_char) -> DomPtr,
    xml_desc: unsafe extern "C" fn(DomPtr, c_uint) -> *mut c_char,
    get_state: unsafe extern "C" fn(DomPtr, *mut c_int, *mut c_int, c_uint) -> c_int,
    is_active: unsafe extern "C" fn(DomPtr) -> c_int,
    create: unsafe extern "C" fn(DomPtr) -> c_int,
    set_autostart: unsafe extern "C" fn(DomPtr, c_int) -> c_int,
    destroy: unsafe extern "C" fn(DomPtr) -> c_int,
    undefine_flags: unsafe extern "C" fn(DomPtr, c_uint) -> c_int,
    domain_free: unsafe extern "C" fn(DomPtr) -> c_int,
    pool_lookup_by_name: unsafe extern "C" fn(ConnPtr, *const c_char) -> PoolPtr,
    pool_define_xml: unsafe extern "C" fn(ConnPtr, *const c_char, c_uint) -> PoolPtr,
    pool_build: unsafe extern "C" fn(PoolPtr, c_uint) -> c_int,
    pool_create: unsafe extern "C" fn(PoolPtr, c_uint) -> c_int,
    pool_set_autostart: unsafe extern "C" fn(PoolPtr, c_int) -> c_int,
    pool_is_active: unsafe extern "C" fn(PoolPtr) -> c_int,
    pool_refresh: unsafe extern "C" fn(PoolPtr, c_uint) -> c_int,
    pool_xml_desc: unsafe extern "C" fn(PoolPtr, c_uint) -> *mut c_char,
    pool_free: unsafe extern "C" fn(PoolPtr) -> c_int,
    vol_lookup_by_name: unsafe extern "C" fn(PoolPtr, *const c_char) -> VolPtr,
    vol_lookup_by_path: unsafe extern "C" fn(ConnPtr, *const c_char) -> VolPtr,
    vol_create_xml: unsafe extern "C" fn(PoolPtr, *const c_char, c_uint) -> VolPtr,
    vol_create_xml_from: unsafe extern "C" fn(PoolPtr, *const c_char, VolPtr, c_uint) -> VolPtr,
    vol_path: unsafe extern "C" fn(VolPtr) -> *mut c_char,
    vol_xml_desc: unsafe extern "C" fn(VolPtr, c_uint) -> *mut c_char,
    vol_delete: unsafe extern "C" fn(VolPtr, c_uint) -> c_int,
    vol_free: unsafe extern "C" fn(VolPtr) -> c_int,
    last_error: unsafe extern "C" fn() -> *const ErrorHead,
    reset_last_error: unsafe extern "C" fn(),
    set_error_func:
        unsafe extern "C" fn(*mut c_void, Option<unsafe extern "C" fn(*mut c_void, *const c_void)>),
}

/// libvirt's default error handler prints every error to stderr; ours are returned instead.
unsafe extern "C" fn quiet(_user: *mut c_void, _error: *const c_void) {}

/// An error from a libvirt call: its `virErrorNumber` and message.
#[derive(Debug, Clone)]
pub struct Error {
    pub code: i32,
    pub message: String,
}

/// `VIR_ERR_NO_DOMAIN`.
pub(super) const ERR_NO_DOMAIN: i32 = 42;
/// `VIR_ERR_NO_STORAGE_POOL`.
pub(super) const ERR_NO_STORAGE_POOL: i32 = 49;
/// `VIR_ERR_NO_STORAGE_VOL`.
pub(super) const ERR_NO_STORAGE_VOL: i32 = 50;

/// Set in the daemon, which leaves libvirt to its guest helper process (see `guests::helper`):
/// libvirt cannot be unloaded (it is linked `-z nodelete`), so one load would keep its ~10 MiB
/// mapped for the daemon's whole life.
static FORBIDDEN: AtomicBool = AtomicBool::new(false);

/// From now on this process refuses to load libvirt (a call returns an error naming the bug).
pub(crate) fn forbid_in_this_process() {
    FORBIDDEN.store(true, Ordering::SeqCst);
}

fn api() -> Result<&'static Api, Error> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    if FORBIDDEN.load(Ordering::SeqCst) && API.get().is_none() {
        return Err(Error {
            code: -1,
            message: "internal error: the daemon called libvirt itself instead of through its guest helper".into(),
        });
    }
    API.get_or_init(load).as_ref().map_err(|message| Error {
        code: -1,
        message: message.clone(),
    })
}

// Each transmute's target type is the `Api` field it initialises, which spells out the C signature.
#[allow(clippy::missing_transmute_annotations)]
fn load() -> Result<Api, String> {
    // SAFETY: dlopen with a NUL-terminated name; the handle is kept for the process's life.
    let handle = unsafe { libc::dlopen(LIBRARY.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a NUL-terminated string or null.
        let why = unsafe { libc::dlerror() };
        let why = if why.is_null() {
            String::new()
        } else {
            // SAFETY: non-null, NUL-terminated (see above).
            unsafe { CStr::from_ptr(why) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(format!(
            "libvirt is not installed ({why}): install the libvirt client library (Debian: libvirt0) and a libvirt daemon"
        ));
    }
    macro_rules! sym {
        ($name:literal) => {{
            // SAFETY: a NUL-terminated symbol name on a valid handle.
            let p = unsafe { libc::dlsym(handle, concat!($name, "\0").as_ptr().cast()) };
            if p.is_null() {
                return Err(format!(
                    "{} has no symbol {}: libvirt too old",
                    "libvirt.so.0", $name
                ));
            }
            // SAFETY: the symbol is the libvirt function of that name, whose C signature the
            // field's type spells out (libvirt's ABI is stable across releases).
            unsafe { std::mem::transmute::<*mut c_void, _>(p) }
        }};
    }
    let api = Api {
        connect_open: sym!("virConnectOpen"),
        connect_close: sym!("virConnectClose"),
        list_all_domains: sym!("virConnectListAllDomains"),
        domain_capabilities: sym!("virConnectGetDomainCapabilities"),
        node_info: sym!("virNodeGetInfo"),
        capabilities: sym!("virConnectGetCapabilities"),
        lookup_by_name: sym!("virDomainLookupByName"),
        define_xml: sym!("virDomainDefineXML"),
        xml_desc: sym!("virDomainGetXMLDesc"),
        get_state: sym!("virDomainGetState"),
        is_active: sym!("virDomainIsActive"),
        create: sym!("virDomainCreate"),
        set_autostart: sym!("virDomainSetAutostart"),
        destroy: sym!("virDomainDestroy"),
        undefine_flags: sym!("virDomainUndefineFlags"),
        domain_free: sym!("virDomainFree"),
        pool_lookup_by_name: sym!("virStoragePoolLookupByName"),
        pool_define_xml: sym!("virStoragePoolDefineXML"),
        pool_build: sym!("virStoragePoolBuild"),
        pool_create: sym!("virStoragePoolCreate"),
        pool_set_autostart: sym!("virStoragePoolSetAutostart"),
        pool_is_active: sym!("virStoragePoolIsActive"),
        pool_refresh: sym!("virStoragePoolRefresh"),
        pool_xml_desc: sym!("virStoragePoolGetXMLDesc"),
        pool_free: sym!("virStoragePoolFree"),
        vol_lookup_by_name: sym!("virStorageVolLookupByName"),
        vol_lookup_by_path: sym!("virStorageVolLookupByPath"),
        vol_create_xml: sym!("virStorageVolCreateXML"),
        vol_create_xml_from: sym!("virStorageVolCreateXMLFrom"),
        vol_path: sym!("virStorageVolGetPath"),
        vol_xml_desc: sym!("virStorageVolGetXMLDesc"),
        vol_delete: sym!("virStorageVolDelete"),
        vol_free: sym!("virStorageVolFree"),
        last_error: sym!("virGetLastError"),
        reset_last_error: sym!("virResetLastError"),
        set_error_func: sym!("virSetErrorFunc"),
    };
    // SAFETY: a valid function pointer with the signature virErrorFunc expects.
    unsafe { (api.set_error_func)(std::ptr::null_mut(), Some(quiet)) };
    Ok(api)
}

/// The calling thread's last libvirt error (libvirt keeps it per thread), then cleared.
fn last_error(api: &Api) -> Error {
    // SAFETY: virGetLastError returns null or a pointer valid until the next call on this thread.
    let e = unsafe { (api.last_error)() };
    let out = if e.is_null() {
        Error {
            code: 0,
            message: "unknown libvirt error".into(),
        }
    } else {
        // SAFETY: non-null virError; message is null or NUL-terminated.
        let (code, msg) = unsafe { ((*e).code, (*e).message) };
        let message = if msg.is_null() {
            format!("libvirt error {code}")
        } else {
            // SAFETY: see above.
            unsafe { CStr::from_ptr(msg) }
                .to_string_lossy()
                .into_owned()
        };
        Error { code, message }
    };
    // SAFETY: no arguments.
    unsafe { (api.reset_last_error)() };
    out
}

fn c_string(s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error {
        code: -1,
        message: format!("{s:?} contains a NUL byte"),
    })
}

/// Copies and frees a string libvirt allocated.
fn take_string(api: &Api, p: *mut c_char) -> Result<String, Error> {
    if p.is_null() {
        return Err(last_error(api));
    }
    // SAFETY: non-null, NUL-terminated, allocated by libvirt with malloc; freed once, here.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    // SAFETY: `p` came from libvirt's malloc and nothing refers to it after the copy above.
    unsafe { libc::free(p.cast()) };
    Ok(s)
}

fn check(api: &Api, rc: c_int) -> Result<c_int, Error> {
    if rc < 0 {
        Err(last_error(api))
    } else {
        Ok(rc)
    }
}

/// A connection; closed on drop.
pub(super) struct Connect {
    ptr: ConnPtr,
    api: &'static Api,
}

// SAFETY: libvirt connections may be used from any thread (one at a time, which &/&mut ensure
// for the calls here); the agent moves them into blocking-pool threads.
unsafe impl Send for Connect {}

impl Connect {
    pub(super) fn open(uri: &str) -> Result<Connect, Error> {
        let api = api()?;
        let uri = c_string(uri)?;
        // SAFETY: valid NUL-terminated URI.
        let ptr = unsafe { (api.connect_open)(uri.as_ptr()) };
        if ptr.is_null() {
            return Err(last_error(api));
        }
        Ok(Connect { ptr, api })
    }

    /// Closes now, reporting an error (drop closes silently).
    pub(super) fn close(mut self) -> Result<(), Error> {
        let ptr = std::mem::replace(&mut self.ptr, std::ptr::null_mut());
        // SAFETY: a connection we opened and have not closed.
        check(self.api, unsafe { (self.api.connect_close)(ptr) }).map(drop)
    }

    pub(super) fn lookup_by_name(&self, name: &str) -> Result<Domain, Error> {
        let name = c_string(name)?;
        // SAFETY: open connection, valid C string.
        let d = unsafe { (self.api.lookup_by_name)(self.ptr, name.as_ptr()) };
        self.domain(d)
    }

    pub(super) fn define_xml(&self, xml: &str) -> Result<Domain, Error> {
        let xml = c_string(xml)?;
        // SAFETY: open connection, valid C string.
        let d = unsafe { (self.api.define_xml)(self.ptr, xml.as_ptr()) };
        self.domain(d)
    }

    fn domain(&self, ptr: DomPtr) -> Result<Domain, Error> {
        Domain::own(self.api, ptr)
    }

    pub(super) fn pool_lookup_by_name(&self, name: &str) -> Result<Pool, Error> {
        let name = c_string(name)?;
        // SAFETY: open connection, valid C string.
        let p = unsafe { (self.api.pool_lookup_by_name)(self.ptr, name.as_ptr()) };
        Pool::own(self.api, p)
    }

    /// Defines (persistently, not started) the pool `xml` describes.
    pub(super) fn pool_define_xml(&self, xml: &str) -> Result<Pool, Error> {
        let xml = c_string(xml)?;
        // SAFETY: open connection, valid C string, no flags.
        let p = unsafe { (self.api.pool_define_xml)(self.ptr, xml.as_ptr(), 0) };
        Pool::own(self.api, p)
    }

    /// The volume whose target is the file `path`, in whichever pool holds it.
    pub(super) fn vol_lookup_by_path(&self, path: &str) -> Result<Volume, Error> {
        let path = c_string(path)?;
        // SAFETY: open connection, valid C string.
        let v = unsafe { (self.api.vol_lookup_by_path)(self.ptr, path.as_ptr()) };
        Volume::own(self.api, v)
    }

    pub(super) fn list_all_domains(&self) -> Result<Vec<Domain>, Error> {
        let mut list: *mut DomPtr = std::ptr::null_mut();
        // SAFETY: open connection; libvirt allocates the array and stores it in `list`.
        let n = check(self.api, unsafe {
            (self.api.list_all_domains)(self.ptr, &mut list, 0)
        })?;
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            out.push(Domain {
                // SAFETY: libvirt returned n valid domain pointers, each now owned by a Domain.
                ptr: unsafe { *list.add(i) },
                api: self.api,
            });
        }
        // SAFETY: the array itself was malloc'd by libvirt (its elements are owned above).
        unsafe { libc::free(list.cast()) };
        Ok(out)
    }

    /// `virConnectGetDomainCapabilities` for x86_64 with the given virt type ("qemu", "kvm").
    pub(super) fn domain_capabilities(&self, virt_type: &str) -> Result<String, Error> {
        let arch = c_string("x86_64")?;
        let virt = c_string(virt_type)?;
        // SAFETY: open connection; null means "default" for the emulator and machine.
        let p = unsafe {
            (self.api.domain_capabilities)(
                self.ptr,
                std::ptr::null(),
                arch.as_ptr(),
                std::ptr::null(),
                virt.as_ptr(),
                0,
            )
        };
        take_string(self.api, p)
    }

    /// `virConnectGetCapabilities`: the host's capabilities XML (guests, security models).
    pub(super) fn capabilities(&self) -> Result<String, Error> {
        // SAFETY: open connection.
        let p = unsafe { (self.api.capabilities)(self.ptr) };
        take_string(self.api, p)
    }

    /// (host CPUs, host memory in KiB).
    pub(super) fn node_info(&self) -> Result<(u32, u64), Error> {
        // SAFETY: an all-zero virNodeInfo is a valid out-parameter.
        let mut info: NodeInfo = unsafe { std::mem::zeroed() };
        // SAFETY: open connection and a writable struct of the right layout.
        check(self.api, unsafe {
            (self.api.node_info)(self.ptr, &mut info)
        })?;
        // c_ulong is 64 bits on every Linux target the agent builds for.
        Ok((info.cpus, info.memory as u64))
    }
}

impl Drop for Connect {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: a connection we opened and have not closed.
            unsafe { (self.api.connect_close)(self.ptr) };
        }
    }
}

/// A libvirt object reference: a pointer libvirt returned, owned by the value and released with
/// `$free` on drop (the object itself, a domain, pool or volume, stays).
macro_rules! handle {
    ($(#[$doc:meta])* $vis:vis $name:ident, $ptr:ty, $free:ident) => {
        $(#[$doc])*
        $vis struct $name {
            ptr: $ptr,
            api: &'static Api,
        }

        // SAFETY: as for Connect.
        unsafe impl Send for $name {}

        impl $name {
            /// Takes ownership of what a libvirt call returned; null means that call failed.
            fn own(api: &'static Api, ptr: $ptr) -> Result<$name, Error> {
                if ptr.is_null() {
                    return Err(last_error(api));
                }
                Ok($name { ptr, api })
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: a reference we own, released once.
                unsafe { (self.api.$free)(self.ptr) };
            }
        }
    };
}

handle!(
    /// A domain reference.
    pub Domain, DomPtr, domain_free
);
handle!(
    /// A storage pool reference.
    pub(super) Pool, PoolPtr, pool_free
);
handle!(
    /// A storage volume reference.
    pub(super) Volume, VolPtr, vol_free
);

impl Domain {
    pub fn xml_desc(&self, flags: u32) -> Result<String, Error> {
        // SAFETY: a valid domain reference.
        let p = unsafe { (self.api.xml_desc)(self.ptr, flags) };
        take_string(self.api, p)
    }

    /// `virDomainState`.
    pub fn state(&self) -> Result<u32, Error> {
        let (mut state, mut reason) = (0, 0);
        // SAFETY: a valid domain reference and two writable ints.
        check(self.api, unsafe {
            (self.api.get_state)(self.ptr, &mut state, &mut reason, 0)
        })?;
        Ok(state as u32)
    }

    pub fn is_active(&self) -> Result<bool, Error> {
        // SAFETY: a valid domain reference.
        check(self.api, unsafe { (self.api.is_active)(self.ptr) }).map(|r| r == 1)
    }

    pub fn create(&self) -> Result<(), Error> {
        // SAFETY: a valid domain reference.
        check(self.api, unsafe { (self.api.create)(self.ptr) }).map(drop)
    }

    pub fn set_autostart(&self, on: bool) -> Result<(), Error> {
        // SAFETY: a valid domain reference.
        check(self.api, unsafe {
            (self.api.set_autostart)(self.ptr, c_int::from(on))
        })
        .map(drop)
    }

    pub fn destroy(&self) -> Result<(), Error> {
        // SAFETY: a valid domain reference.
        check(self.api, unsafe { (self.api.destroy)(self.ptr) }).map(drop)
    }

    pub fn undefine_flags(&self, flags: u32) -> Result<(), Error> {
        // SAFETY: a valid domain reference.
        check(self.api, unsafe {
            (self.api.undefine_flags)(self.ptr, flags)
        })
        .map(drop)
    }
}

impl Pool {
    /// `virStoragePoolBuild` without flags: for a directory pool, makes the directory (with the
    /// pool's permissions) if it is missing.
    pub(super) fn build(&self) -> Result<(), Error> {
        // SAFETY: a valid pool reference, no flags.
        check(self.api, unsafe { (self.api.pool_build)(self.ptr, 0) }).map(drop)
    }

    /// Starts the pool.
    pub(super) fn create(&self) -> Result<(), Error> {
        // SAFETY: a valid pool reference, no flags.
        check(self.api, unsafe { (self.api.pool_create)(self.ptr, 0) }).map(drop)
    }

    pub(super) fn set_autostart(&self, on: bool) -> Result<(), Error> {
        // SAFETY: a valid pool reference.
        check(self.api, unsafe {
            (self.api.pool_set_autostart)(self.ptr, c_int::from(on))
        })
        .map(drop)
    }

    pub(super) fn is_active(&self) -> Result<bool, Error> {
        // SAFETY: a valid pool reference.
        check(self.api, unsafe { (self.api.pool_is_active)(self.ptr) }).map(|r| r == 1)
    }

    /// Rescans the pool's directory, so volumes made outside libvirt are seen.
    pub(super) fn refresh(&self) -> Result<(), Error> {
        // SAFETY: a valid pool reference, no flags.
        check(self.api, unsafe { (self.api.pool_refresh)(self.ptr, 0) }).map(drop)
    }

    pub(super) fn xml_desc(&self) -> Result<String, Error> {
        // SAFETY: a valid pool reference, no flags.
        let p = unsafe { (self.api.pool_xml_desc)(self.ptr, 0) };
        take_string(self.api, p)
    }

    pub(super) fn vol_lookup_by_name(&self, name: &str) -> Result<Volume, Error> {
        let name = c_string(name)?;
        // SAFETY: a valid pool reference, valid C string.
        let v = unsafe { (self.api.vol_lookup_by_name)(self.ptr, name.as_ptr()) };
        Volume::own(self.api, v)
    }

    /// A new volume as `xml` describes it (libvirt creates the file).
    pub(super) fn vol_create_xml(&self, xml: &str) -> Result<Volume, Error> {
        let xml = c_string(xml)?;
        // SAFETY: a valid pool reference, valid C string, no flags.
        let v = unsafe { (self.api.vol_create_xml)(self.ptr, xml.as_ptr(), 0) };
        Volume::own(self.api, v)
    }

    /// A new volume as `xml` describes it, filled with a copy of `from`'s content.
    pub(super) fn vol_create_xml_from(&self, xml: &str, from: &Volume) -> Result<Volume, Error> {
        let xml = c_string(xml)?;
        // SAFETY: valid pool and volume references, valid C string, no flags.
        let v = unsafe { (self.api.vol_create_xml_from)(self.ptr, xml.as_ptr(), from.ptr, 0) };
        Volume::own(self.api, v)
    }
}

impl Volume {
    /// The volume's file, as libvirt (and QEMU) open it.
    pub(super) fn path(&self) -> Result<String, Error> {
        // SAFETY: a valid volume reference.
        let p = unsafe { (self.api.vol_path)(self.ptr) };
        take_string(self.api, p)
    }

    pub(super) fn xml_desc(&self) -> Result<String, Error> {
        // SAFETY: a valid volume reference, no flags.
        let p = unsafe { (self.api.vol_xml_desc)(self.ptr, 0) };
        take_string(self.api, p)
    }

    /// Deletes the volume's file (the reference stays valid until dropped).
    pub(super) fn delete(&self) -> Result<(), Error> {
        // SAFETY: a valid volume reference, no flags (plain unlink).
        check(self.api, unsafe { (self.api.vol_delete)(self.ptr, 0) }).map(drop)
    }
}
