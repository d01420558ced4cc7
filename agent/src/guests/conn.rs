//! A libvirt connection that is always closed explicitly and never lets libvirt print to stderr
//! (see `sys`). Every call blocks: async callers go through [`with_conn`], which runs them on the
//! blocking pool.

pub use super::sys::Domain;
use super::sys::{self, Connect};

use super::xml::{self, DomainInfo};

/// `virDomainGetXMLDesc` flags.
pub const XML_INACTIVE: u32 = 2;
/// `virDomainUndefineFlags`: also drop managed-save images and UEFI variable stores.
const UNDEFINE_MANAGED_SAVE: u32 = 1;
const UNDEFINE_NVRAM: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    #[error("cannot connect to libvirt at {uri}: {message}")]
    Connect { uri: String, message: String },
    #[error("libvirt: {what}: {message}")]
    Call { what: String, message: String },
    #[error(transparent)]
    Xml(#[from] xml::XmlError),
    #[error("libvirt call task failed: {0}")]
    Task(String),
}

pub type Result<T> = std::result::Result<T, LibvirtError>;

fn call(what: impl Into<String>) -> impl FnOnce(sys::Error) -> LibvirtError {
    let what = what.into();
    move |e| LibvirtError::Call {
        what,
        message: e.message,
    }
}

pub struct Conn {
    inner: Option<Connect>,
    pub uri: String,
}

/// State of a domain, in virsh's words.
pub fn state_name(state: u32) -> &'static str {
    match state {
        1 => "running",
        2 => "blocked",
        3 => "paused",
        4 => "shutting down",
        5 => "shut off",
        6 => "crashed",
        7 => "suspended",
        _ => "unknown",
    }
}

impl Conn {
    pub fn open(uri: &str) -> Result<Conn> {
        let c = Connect::open(uri).map_err(|e| LibvirtError::Connect {
            uri: uri.to_string(),
            message: e.message,
        })?;
        Ok(Conn {
            inner: Some(c),
            uri: uri.to_string(),
        })
    }

    pub(super) fn raw(&self) -> &Connect {
        // Only `close` empties it, and it consumes self.
        self.inner.as_ref().expect("connection used after close")
    }

    pub fn close(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(c) = self.inner.take() {
            if let Err(e) = c.close() {
                tracing::warn!(uri = %self.uri, "closing the libvirt connection: {}", e.message);
            }
        }
    }

    pub fn lookup(&self, name: &str) -> Result<Option<Domain>> {
        if name.contains('\0') {
            return Ok(None);
        }
        match self.raw().lookup_by_name(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.code == sys::ERR_NO_DOMAIN => Ok(None),
            Err(e) => Err(call(format!("looking up domain {name}"))(e)),
        }
    }

    pub fn define(&self, xml: &str) -> Result<Domain> {
        self.raw()
            .define_xml(xml)
            .map_err(call("defining a domain"))
    }

    pub fn all_domains(&self) -> Result<Vec<Domain>> {
        self.raw()
            .list_all_domains()
            .map_err(call("listing domains"))
    }

    /// The domain capabilities XML for x86_64 guests of `virt_type` ("qemu", "kvm").
    pub fn domain_capabilities(&self, virt_type: &str) -> Result<String> {
        self.raw()
            .domain_capabilities(virt_type)
            .map_err(call(format!("domain capabilities for {virt_type}")))
    }

    /// The host's capabilities XML.
    pub fn capabilities(&self) -> Result<String> {
        self.raw().capabilities().map_err(call("host capabilities"))
    }

    /// (host CPUs, host memory in KiB).
    pub fn node_info(&self) -> Result<(u32, u64)> {
        self.raw().node_info().map_err(call("node info"))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shut();
    }
}

/// The persistent definition and state of a domain.
pub fn inactive_info(d: &Domain) -> Result<(DomainInfo, String)> {
    let text = d
        .xml_desc(XML_INACTIVE)
        .map_err(call("reading a domain definition"))?;
    Ok((xml::parse(&text)?, text))
}

pub fn state(d: &Domain) -> Result<u32> {
    d.state().map_err(call("reading a domain state"))
}

pub fn start(d: &Domain) -> Result<()> {
    d.create().map_err(call("starting a domain"))
}

pub fn set_autostart(d: &Domain, on: bool) -> Result<()> {
    d.set_autostart(on).map_err(call("setting autostart"))
}

pub fn destroy_and_undefine(d: &Domain) -> Result<()> {
    if d.is_active().map_err(call("reading a domain state"))? {
        d.destroy().map_err(call("stopping a domain"))?;
    }
    d.undefine_flags(UNDEFINE_MANAGED_SAVE | UNDEFINE_NVRAM)
        .map_err(call("undefining a domain"))
}

/// Run blocking libvirt work on the blocking pool with a fresh connection.
pub async fn with_conn<T: Send + 'static>(
    uri: &str,
    f: impl FnOnce(&Conn) -> Result<T> + Send + 'static,
) -> Result<T> {
    let uri = uri.to_string();
    tokio::task::spawn_blocking(move || {
        let conn = Conn::open(&uri)?;
        let out = f(&conn);
        conn.close();
        out
    })
    .await
    .map_err(|e| LibvirtError::Task(e.to_string()))?
}
