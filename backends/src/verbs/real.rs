//! `RealVerbs`: libibverbs through rdma-sys. The only unsafe code of the backend: each call passes
//! a context the library opened and pointers to values that live across the call.
#![allow(unsafe_code)]

use std::ffi::CStr;

use hal::RdmaGid;
use rdma_sys::{
    ___ibv_query_port, ibv_close_device, ibv_context, ibv_device, ibv_device_attr,
    ibv_free_device_list, ibv_get_device_list, ibv_get_device_name, ibv_gid, ibv_open_device,
    ibv_port_attr, ibv_query_device, ibv_query_gid,
};

use super::{VerbsApi, VerbsDevice, VerbsPort, gid_text, mtu_bytes};

/// More GID entries than any port has (mlx5: 255): a larger table length is cut there.
const MAX_GIDS: i32 = 1024;

/// libibverbs itself.
#[derive(Debug, Default)]
pub struct RealVerbs;

impl VerbsApi for RealVerbs {
    fn query(&self) -> Result<Vec<VerbsDevice>, String> {
        let mut count = 0i32;
        // SAFETY: `count` is live; the list is freed below and its entries are used only until then.
        let list = unsafe { ibv_get_device_list(&raw mut count) };
        if list.is_null() {
            let why = std::io::Error::last_os_error();
            return Err(format!("verbs unavailable: ibv_get_device_list: {why}"));
        }
        let mut devices = Vec::new();
        for index in 0..usize::try_from(count).unwrap_or(0) {
            // SAFETY: the list holds `count` device pointers.
            let device = unsafe { *list.add(index) };
            if device.is_null() {
                break;
            }
            devices.push(query_device(device));
        }
        // SAFETY: the list came from ibv_get_device_list and is not used after this.
        unsafe { ibv_free_device_list(list) };
        Ok(devices)
    }
}

fn query_device(device: *mut ibv_device) -> VerbsDevice {
    // SAFETY: `device` is an entry of a live device list; the name is copied before the list goes.
    let name = unsafe { CStr::from_ptr(ibv_get_device_name(device)) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: as above; the context is closed below.
    let context = unsafe { ibv_open_device(device) };
    if context.is_null() {
        let why = std::io::Error::last_os_error();
        return VerbsDevice {
            name,
            error: Some(format!("ibv_open_device: {why}")),
            ..VerbsDevice::default()
        };
    }
    let answer = query_context(context);
    // SAFETY: `context` was opened above and is not used after this.
    unsafe { ibv_close_device(context) };
    match answer {
        Ok((max_qp, ports)) => VerbsDevice {
            name,
            max_qp,
            ports,
            error: None,
        },
        Err(why) => VerbsDevice {
            name,
            error: Some(why),
            ..VerbsDevice::default()
        },
    }
}

fn query_context(context: *mut ibv_context) -> Result<(Option<u32>, Vec<VerbsPort>), String> {
    // SAFETY: a plain C structure, filled in by the call below.
    let mut attr: ibv_device_attr = unsafe { std::mem::zeroed() };
    // SAFETY: `context` is open and `attr` is live.
    let rc = unsafe { ibv_query_device(context, &raw mut attr) };
    if rc != 0 {
        let why = std::io::Error::from_raw_os_error(rc);
        return Err(format!("ibv_query_device: {why}"));
    }
    let mut ports = Vec::new();
    for number in 1..=attr.phys_port_cnt {
        // SAFETY: as above.
        let mut port: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: `context` is open and `port` is live and as large as the library expects.
        let rc = unsafe { ___ibv_query_port(context, number, &raw mut port) };
        if rc != 0 {
            let why = std::io::Error::from_raw_os_error(rc);
            return Err(format!("ibv_query_port {number}: {why}"));
        }
        let mut gids = Vec::new();
        for index in 0..port.gid_tbl_len.clamp(0, MAX_GIDS) {
            // SAFETY: a plain 16-byte union, filled in by the call below.
            let mut gid: ibv_gid = unsafe { std::mem::zeroed() };
            // SAFETY: `context` is open, `index` is within the table and `gid` is live.
            if unsafe { ibv_query_gid(context, number, index, &raw mut gid) } != 0 {
                continue;
            }
            // SAFETY: every bit pattern is a valid `[u8; 16]`.
            let raw = unsafe { gid.raw };
            if raw != [0; 16] {
                let index = u32::try_from(index).unwrap_or_default();
                gids.push(RdmaGid {
                    index,
                    gid: gid_text(&raw),
                });
            }
        }
        ports.push(VerbsPort {
            number: u32::from(number),
            link_layer: match port.link_layer {
                1 => Some("InfiniBand".to_owned()),
                2 => Some("Ethernet".to_owned()),
                _ => None,
            },
            active_mtu: mtu_bytes(port.active_mtu),
            lid: port.lid,
            gids,
        });
    }
    Ok((u32::try_from(attr.max_qp).ok(), ports))
}
