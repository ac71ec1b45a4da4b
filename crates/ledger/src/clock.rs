//! The state of the node's clock, as the kernel reports it: whether NTP
//! (or PTP, chrony…) keeps it synchronised and the kernel's error bounds.
//! Every seal records it, so a reader of the evidence can tell whether the
//! timestamps it covers came from a disciplined clock.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClockState {
    /// Where the state was read: `adjtimex` (Linux kernel) or `unknown`.
    pub source: String,
    /// The kernel's view: synchronised to a time source, or not. `None`
    /// when it could not be read.
    pub synced: Option<bool>,
    /// The kernel's maximum error bound, microseconds.
    pub max_error_us: Option<i64>,
    /// The kernel's estimated error, microseconds.
    pub est_error_us: Option<i64>,
}

impl ClockState {
    pub fn unknown() -> Self {
        Self {
            source: "unknown".into(),
            synced: None,
            max_error_us: None,
            est_error_us: None,
        }
    }

    /// One line for logs and reports.
    pub fn describe(&self) -> String {
        match self.synced {
            Some(true) => format!(
                "synchronised ({}; max error {} µs, estimated {} µs)",
                self.source,
                self.max_error_us.unwrap_or(-1),
                self.est_error_us.unwrap_or(-1)
            ),
            Some(false) => format!("NOT synchronised ({})", self.source),
            None => "unknown".into(),
        }
    }
}

/// Reads the clock state without changing anything (`adjtimex` with no
/// modes set is a pure query).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn read() -> ClockState {
    // SAFETY: `timex` is plain data; zeroed is a valid value, and with
    // `modes = 0` the kernel only writes the current state into it.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return ClockState::unknown();
    }
    // STA_UNSYNC set, or the TIME_ERROR state: no time source disciplines
    // the clock.
    let unsynced = (tx.status & libc::STA_UNSYNC) != 0 || state == libc::TIME_ERROR;
    ClockState {
        source: "adjtimex".into(),
        synced: Some(!unsynced),
        max_error_us: Some(tx.maxerror as i64),
        est_error_us: Some(tx.esterror as i64),
    }
}

#[cfg(not(target_os = "linux"))]
pub fn read() -> ClockState {
    ClockState::unknown()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kernel_reports_a_state() {
        let s = super::read();
        assert_eq!(s.source, "adjtimex");
        assert!(s.synced.is_some());
        assert!(s.max_error_us.unwrap() >= 0);
    }
}
