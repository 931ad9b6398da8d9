//! Which CPU this is: vendor and family from `cpuid`, for choices that depend on the microarchitecture rather
//! than on the instruction set (how far ahead to prefetch, when threads pay). Virtual machines often report a
//! made-up model number, so tables key on vendor and family only.

use std::fmt;
use std::sync::OnceLock;

/// A CPU vendor, from `cpuid` leaf 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vendor {
    /// `GenuineIntel`.
    Intel,
    /// `AuthenticAMD` (and `HygonGenuine`, a Zen derivative).
    Amd,
    /// Anything else, or not an x86-64 CPU.
    Other,
}

/// The vendor and (display) family and model of this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cpu {
    /// Who made it.
    pub vendor: Vendor,
    /// The display family (base family plus extended family): 6 for Intel Core/Xeon, 0x19 for AMD Zen 3/4, 0x1A
    /// for Zen 5. 0 when unknown.
    pub family: u32,
    /// The display model (as reported; under a hypervisor it may not be the real one). 0 when unknown.
    pub model: u32,
}

impl Cpu {
    /// This CPU (read once, then cached).
    ///
    /// ```
    /// let cpu = adagrad_kernels::Cpu::this();
    /// println!("{cpu}");
    /// ```
    pub fn this() -> Cpu {
        static CPU: OnceLock<Cpu> = OnceLock::new();
        *CPU.get_or_init(read)
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = match self.vendor {
            Vendor::Intel => "Intel",
            Vendor::Amd => "AMD",
            Vendor::Other => "other",
        };
        write!(f, "{v} family {:#x} model {:#x}", self.family, self.model)
    }
}

#[cfg(target_arch = "x86_64")]
fn read() -> Cpu {
    use core::arch::x86_64::__cpuid;
    let leaf0 = __cpuid(0);
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    id[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    id[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
    let vendor = match &id {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    };
    if leaf0.eax < 1 {
        return Cpu {
            vendor,
            family: 0,
            model: 0,
        };
    }
    let eax = __cpuid(1).eax;
    let base_family = (eax >> 8) & 0xF;
    let base_model = (eax >> 4) & 0xF;
    let family = if base_family == 0xF {
        base_family + ((eax >> 20) & 0xFF)
    } else {
        base_family
    };
    let model = if base_family == 0x6 || base_family == 0xF {
        base_model | (((eax >> 16) & 0xF) << 4)
    } else {
        base_model
    };
    Cpu {
        vendor,
        family,
        model,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn read() -> Cpu {
    Cpu {
        vendor: Vendor::Other,
        family: 0,
        model: 0,
    }
}
