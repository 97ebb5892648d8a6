//! [`RealLevelZero`]: the Level Zero loader, opened at run time. The only unsafe code of the backend:
//! each call passes pointers to values that live across it and counts that bound the arrays.
#![allow(unsafe_code)]

use std::ptr;
use std::sync::OnceLock;

use super::bindings::{
    _ze_eu_count_ext_t, ZE_DEVICE_PROPERTY_FLAG_INTEGRATED, ZE_INIT_FLAG_GPU_ONLY,
    ZE_RESULT_SUCCESS, ZE_STRUCTURE_TYPE_DEVICE_MEMORY_PROPERTIES,
    ZE_STRUCTURE_TYPE_DEVICE_PROPERTIES, ZE_STRUCTURE_TYPE_EU_COUNT_EXT,
    ZE_STRUCTURE_TYPE_PCI_EXT_PROPERTIES, ZeLoader, ze_device_handle_t,
    ze_device_memory_properties_t, ze_device_properties_t, ze_pci_ext_properties_t, ze_result_t,
};
use super::{LOADER, LevelZeroApi, ZeGpu};

/// More handles than any machine has: a larger count from the library is refused, not allocated.
const MAX_HANDLES: u32 = 1024;

/// Level Zero itself (`libze_loader.so.1`).
#[derive(Debug, Default)]
pub struct RealLevelZero;

/// The loader, opened and initialised once for the process: the runtime is not made to be unloaded
/// and initialised again on every rescan.
fn loader() -> Result<&'static ZeLoader, String> {
    static LOADER_ONCE: OnceLock<Result<ZeLoader, String>> = OnceLock::new();
    LOADER_ONCE
        .get_or_init(|| {
            // SAFETY: loading the loader runs its initialisers, as in any Level Zero program; every
            // symbol the bindings name is resolved now (`--dynamic-link-require-all`).
            let ze = unsafe { ZeLoader::new(LOADER) }
                .map_err(|e| format!("Level Zero unavailable: {e}"))?;
            // SAFETY: a plain call with flags.
            check(unsafe { ze.zeInit(ZE_INIT_FLAG_GPU_ONLY) }, "zeInit")
                .map_err(|why| format!("Level Zero unavailable: {why}"))?;
            Ok(ze)
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl LevelZeroApi for RealLevelZero {
    fn query(&self) -> Result<Vec<ZeGpu>, String> {
        let ze = loader()?;
        let drivers = handles("zeDriverGet", |count, out| {
            // SAFETY: `count` points to a live u32 and `out` is null or holds `*count` handles.
            unsafe { ze.zeDriverGet(count, out) }
        })
        .map_err(|why| format!("Level Zero unavailable: {why}"))?;
        let mut gpus = Vec::new();
        for driver in drivers {
            let devices = handles("zeDeviceGet", |count, out| {
                // SAFETY: as above, for a driver handle the loader gave.
                unsafe { ze.zeDeviceGet(driver, count, out) }
            });
            // One driver or device that cannot be read is its own error, not the others'.
            let devices = match devices {
                Ok(devices) => devices,
                Err(why) => {
                    gpus.push(ZeGpu {
                        error: Some(format!("a driver's devices: {why}")),
                        ..ZeGpu::default()
                    });
                    continue;
                }
            };
            gpus.extend(devices.into_iter().map(|device| read_device(ze, device)));
        }
        Ok(gpus)
    }
}

/// What Level Zero says of `device`; a failed query is the device's `error`, with its PCI address
/// when that was read (so the error names the GPU, and its other tiles are not used alone).
fn read_device(ze: &ZeLoader, device: ze_device_handle_t) -> ZeGpu {
    let mut gpu = ZeGpu::default();
    if let Err(why) = fill_device(ze, device, &mut gpu) {
        gpu.error = Some(why);
    }
    gpu
}

fn fill_device(ze: &ZeLoader, device: ze_device_handle_t, gpu: &mut ZeGpu) -> Result<(), String> {
    let mut eus = _ze_eu_count_ext_t {
        stype: ZE_STRUCTURE_TYPE_EU_COUNT_EXT,
        pNext: ptr::null(),
        numTotalEUs: 0,
    };
    let mut props = ze_device_properties_t {
        stype: ZE_STRUCTURE_TYPE_DEVICE_PROPERTIES,
        pNext: (&raw mut eus).cast(),
        ..Default::default()
    };
    // SAFETY: `props` and the EU count it chains are live, typed output structures with their `stype`
    // set; a driver that does not know the extension leaves it untouched.
    check(
        unsafe { ze.zeDeviceGetProperties(device, &raw mut props) },
        "zeDeviceGetProperties",
    )?;
    let mut pci = ze_pci_ext_properties_t {
        stype: ZE_STRUCTURE_TYPE_PCI_EXT_PROPERTIES,
        ..Default::default()
    };
    // SAFETY: as above.
    let pci_result = unsafe { ze.zeDevicePciGetPropertiesExt(device, &raw mut pci) };
    check(pci_result, "zeDevicePciGetPropertiesExt")?;
    let a = pci.address;
    gpu.pci_address = format!(
        "{:04x}:{:02x}:{:02x}.{:x}",
        a.domain, a.bus, a.device, a.function
    );
    let sub_devices = handles("zeDeviceGetSubDevices", |count, out| {
        // SAFETY: as for zeDriverGet.
        unsafe { ze.zeDeviceGetSubDevices(device, count, out) }
    })?;
    let execution_units = match eus.numTotalEUs {
        0 => props
            .numSlices
            .checked_mul(props.numSubslicesPerSlice)
            .and_then(|n| n.checked_mul(props.numEUsPerSubslice)),
        total => Some(total),
    };
    gpu.memory_bytes = memory_bytes(ze, device)?;
    gpu.name = c_text(&props.name);
    gpu.vendor_id = props.vendorId;
    gpu.device_id = props.deviceId;
    gpu.integrated = props.flags & ZE_DEVICE_PROPERTY_FLAG_INTEGRATED != 0;
    gpu.sub_devices = u32::try_from(sub_devices.len()).unwrap_or(u32::MAX);
    gpu.execution_units = execution_units.filter(|n| *n > 0);
    Ok(())
}

/// The sum of the device's memories (`None` when it reports none).
fn memory_bytes(ze: &ZeLoader, device: ze_device_handle_t) -> Result<Option<u64>, String> {
    let mut count = 0u32;
    // SAFETY: a count query: `count` is live and the array pointer is null.
    let first = unsafe { ze.zeDeviceGetMemoryProperties(device, &raw mut count, ptr::null_mut()) };
    check(first, "zeDeviceGetMemoryProperties")?;
    if count == 0 {
        return Ok(None);
    }
    if count > MAX_HANDLES {
        return Err(format!("zeDeviceGetMemoryProperties: {count} memories"));
    }
    let blank = ze_device_memory_properties_t {
        stype: ZE_STRUCTURE_TYPE_DEVICE_MEMORY_PROPERTIES,
        ..Default::default()
    };
    let mut memories = vec![blank; count as usize];
    // SAFETY: `memories` holds `count` typed structures with their `stype` set.
    let second =
        unsafe { ze.zeDeviceGetMemoryProperties(device, &raw mut count, memories.as_mut_ptr()) };
    check(second, "zeDeviceGetMemoryProperties")?;
    memories.truncate(count as usize);
    Ok(Some(
        memories
            .iter()
            .map(|m| m.totalSize)
            .fold(0, u64::saturating_add),
    ))
}

/// Level Zero's two-call pattern: the count, then that many handles.
fn handles<H>(
    what: &str,
    mut call: impl FnMut(*mut u32, *mut *mut H) -> ze_result_t,
) -> Result<Vec<*mut H>, String> {
    let mut count = 0u32;
    check(call(&raw mut count, ptr::null_mut()), what)?;
    if count > MAX_HANDLES {
        return Err(format!("{what}: {count} handles"));
    }
    let mut out = vec![ptr::null_mut(); count as usize];
    check(call(&raw mut count, out.as_mut_ptr()), what)?;
    out.truncate(count as usize);
    Ok(out)
}

fn check(result: ze_result_t, what: &str) -> Result<(), String> {
    if result == ZE_RESULT_SUCCESS {
        Ok(())
    } else {
        Err(format!("{what} returned {result:#x}"))
    }
}

/// A NUL-terminated C string in a fixed array, as text (lossy; the whole array when unterminated).
fn c_text(raw: &[std::os::raw::c_char]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
