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
    let leaf1 = if leaf0.eax >= 1 {
        Some(__cpuid(1).eax)
    } else {
        None
    };
    Cpu::decode([leaf0.ebx, leaf0.edx, leaf0.ecx], leaf1)
}

impl Cpu {
    /// Decodes `cpuid`: the vendor string of leaf 0 (registers ebx, edx, ecx, in that order) and, when the CPU
    /// has leaf 1, its eax (the signature: stepping, model, family and their extensions).
    ///
    /// ```
    /// use adagrad_kernels::{Cpu, Vendor};
    /// let amd = u32::from_le_bytes(*b"Auth");
    /// let (edx, ecx) = (u32::from_le_bytes(*b"enti"), u32::from_le_bytes(*b"cAMD"));
    /// // Zen 4 (family 0x19, model 0x11): signature 0x00A10F11.
    /// let cpu = Cpu::decode([amd, edx, ecx], Some(0x00A1_0F11));
    /// assert_eq!((cpu.vendor, cpu.family, cpu.model), (Vendor::Amd, 0x19, 0x11));
    /// ```
    pub fn decode(vendor: [u32; 3], signature: Option<u32>) -> Cpu {
        let mut id = [0u8; 12];
        for (chunk, reg) in id.chunks_mut(4).zip(vendor) {
            chunk.copy_from_slice(&reg.to_le_bytes());
        }
        let vendor = match &id {
            b"GenuineIntel" => Vendor::Intel,
            b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
            _ => Vendor::Other,
        };
        let Some(eax) = signature else {
            return Cpu {
                vendor,
                family: 0,
                model: 0,
            };
        };
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
}

#[cfg(not(target_arch = "x86_64"))]
fn read() -> Cpu {
    Cpu {
        vendor: Vendor::Other,
        family: 0,
        model: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(id: &[u8; 12]) -> [u32; 3] {
        let r = |i: usize| u32::from_le_bytes(id[i..i + 4].try_into().unwrap());
        [r(0), r(4), r(8)]
    }

    /// Signatures from vendors' documentation: family, model and the extended fields combine as the SDM says.
    #[test]
    fn decodes_known_signatures() {
        let cases = [
            (b"GenuineIntel", 0x000A_0671, Vendor::Intel, 6, 0xA7), // as this VM reports (Rocket Lake id)
            (b"GenuineIntel", 0x0008_06F8, Vendor::Intel, 6, 0x8F), // Sapphire Rapids
            (b"GenuineIntel", 0x0000_0F29, Vendor::Intel, 0xF, 0x2), // NetBurst: family 0xF, no extension
            (b"GenuineIntel", 0x0000_0653, Vendor::Intel, 6, 0x5),   // family 6, no extended model
            (b"AuthenticAMD", 0x00A1_0F11, Vendor::Amd, 0x19, 0x11), // Zen 4 (Genoa)
            (b"AuthenticAMD", 0x00B4_0F40, Vendor::Amd, 0x1A, 0x44), // Zen 5
            (b"AuthenticAMD", 0x0080_0F12, Vendor::Amd, 0x17, 0x1),  // Zen 1
            (b"AuthenticAMD", 0x0000_0562, Vendor::Amd, 5, 0x6), // K6: base family 5, model not extended
            (b"HygonGenuine", 0x0090_0F02, Vendor::Amd, 0x18, 0x0), // Hygon Dhyana
            (b"CentaurHauls", 0x0000_06F2, Vendor::Other, 6, 0xF),
        ];
        for (id, sig, vendor, family, model) in cases {
            let cpu = Cpu::decode(regs(id), Some(sig));
            assert_eq!(
                (cpu.vendor, cpu.family, cpu.model),
                (vendor, family, model),
                "{} {sig:#x}",
                String::from_utf8_lossy(id)
            );
        }
        let old = Cpu::decode(regs(b"GenuineIntel"), None);
        assert_eq!((old.vendor, old.family, old.model), (Vendor::Intel, 0, 0));
    }

    #[test]
    fn displays_vendor_family_and_model() {
        let cpu = Cpu::decode(regs(b"AuthenticAMD"), Some(0x00A1_0F11));
        assert_eq!(cpu.to_string(), "AMD family 0x19 model 0x11");
        assert_eq!(
            Cpu::decode(regs(b"GenuineIntel"), Some(0x0008_06F8)).to_string(),
            "Intel family 0x6 model 0x8f"
        );
        assert_eq!(
            Cpu::decode(regs(b"VIA VIA VIA "), None).to_string(),
            "other family 0x0 model 0x0"
        );
    }

    #[test]
    fn this_cpu_is_read_once_and_consistently() {
        assert_eq!(Cpu::this(), Cpu::this());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(Cpu::this(), read());
    }
}
