//! The report for people: per claim, the verdict, the devices in columns, the alignment, and why not.

use std::fmt::Write;

use crate::outcome::{Outcome, Status};
use crate::text::{cell, field_safe, lines_safe};

/// Renders outcomes as text. Names come from the user's files unvalidated: each value is escaped
/// ([`field_safe`]) before it goes into a line, so none starts a line of its own or acts on a terminal,
/// and each name is cut at [`crate::text::MAX_CELL_CHARS`] ([`cell`]): a huge one would widen every
/// row of its table to its length.
pub fn render_table(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let verdict = match outcome.status {
            Status::Allocated => "fits",
            Status::Unsatisfiable => "does NOT fit",
            Status::Undecided => "undecided (the search gave up)",
            Status::Error => "error (the scheduler fails it)",
        };
        // Gates are named only where some are off (older versions' defaults, or --feature-gates).
        let gates = match outcome.feature_gates.starts_with("every") {
            true => String::new(),
            false => format!("; {}", outcome.feature_gates),
        };
        let _ = writeln!(
            out,
            "{}: {verdict} (Kubernetes {} rules{gates})",
            cell(&outcome.claim),
            outcome.kubernetes_version
        );
        if let Some(pod) = &outcome.pod {
            let _ = writeln!(
                out,
                "  of {} (the scheduler allocates the pod's pending claims together, in one search)",
                cell(pod)
            );
        }
        if !outcome.devices.is_empty() {
            let header = [
                "REQUEST",
                "DRIVER",
                "POOL",
                "DEVICE",
                "NUMA",
                "PCIE ROOT",
                "CONSUMES",
            ];
            let rows: Vec<[String; 7]> = outcome
                .devices
                .iter()
                .map(|d| {
                    let mut consumes: Vec<String> = d
                        .consumed_capacity
                        .iter()
                        .map(|(k, v)| format!("{}={}", cell(k), cell(v)))
                        .collect();
                    if d.admin_access {
                        consumes.insert(0, "admin access".into());
                    }
                    [
                        cell(&d.request).into_owned(),
                        cell(&d.driver).into_owned(),
                        cell(&d.pool).into_owned(),
                        cell(&d.device).into_owned(),
                        d.numa_node.map_or("-".into(), |n| n.to_string()),
                        d.pcie_root
                            .as_deref()
                            .map_or_else(|| "-".into(), |r| cell(r).into_owned()),
                        if consumes.is_empty() {
                            "-".into()
                        } else {
                            consumes.join(",")
                        },
                    ]
                })
                .collect();
            let mut widths = header.map(str::len);
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.len());
                }
            }
            let line = |cells: Vec<&str>| {
                let padded: Vec<String> = cells
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                format!("  {}\n", padded.join("  ").trim_end())
            };
            out.push_str(&line(header.to_vec()));
            for row in &rows {
                out.push_str(&line(row.iter().map(String::as_str).collect()));
            }
        }
        for m in &outcome.request_mappings {
            let _ = writeln!(
                out,
                "  container {} {}: {}",
                cell(&m.container_name),
                cell(&m.resource_name),
                cell(&m.request_name)
            );
        }
        if let Some(numa) = &outcome.numa {
            let _ = writeln!(out, "  NUMA: {}", field_safe(numa));
        }
        if let Some(root) = &outcome.pcie_root {
            let _ = writeln!(out, "  PCIe: {}", field_safe(root));
        }
        match (&outcome.node_selector, outcome.status) {
            (Some(selector), _) => {
                let _ = writeln!(
                    out,
                    "  node selector: {}",
                    field_safe(&crate::nodes::describe_node_selector(selector))
                );
            }
            (None, Status::Allocated) => {
                let _ = writeln!(out, "  node selector: none (usable on every node)");
            }
            (None, _) => {}
        }
        // An explanation may have lines of its own (a device count per reason): they are indented
        // under it.
        for line in &outcome.explanation {
            let _ = writeln!(
                out,
                "  why: {}",
                lines_safe(line).replace('\n', "\n       ")
            );
        }
        for warning in &outcome.warnings {
            let _ = writeln!(out, "  warning: {}", field_safe(warning));
        }
    }
    out
}
