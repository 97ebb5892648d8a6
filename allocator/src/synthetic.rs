//! Synthetic nodes and claims of any size, for benchmarks and tests of the search.

use std::fmt::Write;

const TYPES: [&str; 4] = ["gpu", "nic", "nvme", "fpga"];

/// A node of `devices` devices of driver `example.com` in slices of 128, round-robin over `numa`
/// NUMA nodes and four types (`gpu`, `nic`, `nvme`, `fpga`), with the class `example`.
pub fn node(devices: usize, numa: usize) -> String {
    let slices = devices.div_ceil(128).max(1);
    let mut text = String::new();
    for s in 0..slices {
        let _ = write!(
            text,
            "---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {{name: n-{s}}}\nspec:\n  driver: example.com\n  nodeName: node-n\n  pool: {{name: pool-n, generation: 1, resourceSliceCount: {slices}}}\n  devices:\n"
        );
        for i in (s * 128)..((s + 1) * 128).min(devices) {
            let ty = TYPES.get(i % 4).copied().unwrap_or_default();
            let node = (i / 4) % numa.max(1);
            let _ = writeln!(
                text,
                "  - {{name: dev-{i}, attributes: {{type: {{string: {ty}}}, numaNode: {{int: {node}}}}}}}"
            );
        }
    }
    text.push_str("---\napiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: example}\nspec:\n  selectors:\n  - cel: {expression: 'device.driver == \"example.com\"'}\n");
    text
}

/// A claim of `requests` requests of one device each, cycling through the four types, all on one NUMA
/// node (`matchAttribute`); when `last_on` is given, the last request only accepts that NUMA node.
pub fn claim(requests: usize, last_on: Option<usize>) -> String {
    let mut text = String::from(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: c, namespace: bench}\nspec:\n  devices:\n    requests:\n",
    );
    for r in 0..requests {
        let ty = TYPES.get(r % 4).copied().unwrap_or_default();
        let mut expression = format!("device.attributes[\"example.com\"].type == \"{ty}\"");
        if let (Some(node), true) = (last_on, r + 1 == requests) {
            let _ = write!(
                expression,
                " && device.attributes[\"example.com\"].numaNode == {node}"
            );
        }
        let _ = writeln!(
            text,
            "    - name: r{r}\n      exactly:\n        deviceClassName: example\n        selectors: [{{cel: {{expression: '{expression}'}}}}]"
        );
    }
    text.push_str("    constraints:\n    - matchAttribute: example.com/numaNode\n");
    text
}
