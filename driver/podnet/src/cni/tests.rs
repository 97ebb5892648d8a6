//! CNI mode without root: the config rules, what each plugin gets (fake plugins written as scripts,
//! which record their environment and stdin), the cache, and the NAD read through the fake API server.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use dra_kubelet_plugin::fake_api::FakeApi;

/// A fake plugin `name` in `dir`: records `COMMAND CONTAINERID NETNS IFNAME ARGS` in `dir/log` and
/// its stdin in `dir/<name>-<COMMAND>.json`; ADD prints a 1.0.0 result with address 192.0.2.`n`/24
/// and MAC 02:00:00:00:00:0`n`, or, with `fail`, a CNI error.
fn plugin(dir: &Path, name: &str, n: u8, fail: bool) {
    let d = dir.display();
    let add = if fail {
        r#"printf '{"code":7,"msg":"no such device","details":"vf0"}'; exit 1"#.to_owned()
    } else {
        format!(
            r#"printf '{{"cniVersion":"1.0.0","interfaces":[{{"name":"%s","mac":"02:00:00:00:00:0{n}","sandbox":"%s"}}],"ips":[{{"address":"192.0.2.{n}/24","gateway":"192.0.2.1","interface":0}}]}}' "$CNI_IFNAME" "$CNI_NETNS""#
        )
    };
    let script = format!(
        "#!/bin/sh\necho \"{name} $CNI_COMMAND $CNI_CONTAINERID $CNI_NETNS $CNI_IFNAME $CNI_ARGS\" >> {d}/log\n\
         cat > {d}/{name}-$CNI_COMMAND.json\nif [ \"$CNI_COMMAND\" = ADD ]; then {add}; fi\n"
    );
    write_exec(&dir.join(name), &script);
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn log(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn stdin(dir: &Path, name: &str, command: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("{name}-{command}.json"))).unwrap())
        .unwrap()
}

fn runtime(dir: &Path) -> Cni {
    Cni {
        bin_dirs: vec![dir.join("bin")],
        cache_dir: dir.join("state/cni/results"),
        timeout: Duration::from_secs(20),
    }
}

fn attachment() -> Attachment {
    Attachment {
        container_id: "sandbox1".into(),
        netns: PathBuf::from("/run/netns/pod1"),
        if_name: "net1".into(),
        device_id: Some("0000:3b:02.0".into()),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), "demo".into()),
            ("K8S_POD_NAME".into(), "p".into()),
        ],
        labels: [("claim".to_owned(), "uid-1".to_owned())].into(),
    }
}

fn conflist() -> ConfList {
    ConfList::parse(
        r#"{"cniVersion": "1.0.0", "name": "vf-test1", "plugins": [
            {"type": "first", "capabilities": {"deviceID": true}, "ipam": {"type": "static"}},
            {"type": "second", "x": 1}]}"#,
    )
    .unwrap()
}

#[test]
fn a_single_plugin_config_is_a_list_of_one_and_problems_name_the_field() {
    let one = ConfList::parse(
        r#"{"cniVersion": "0.4.0", "name": "net-a", "type": "host-device", "device": "vf0"}"#,
    )
    .unwrap();
    assert_eq!(
        (one.cni_version.as_str(), one.name.as_str()),
        ("0.4.0", "net-a")
    );
    assert_eq!(one.plugins.len(), 1);
    assert_eq!(one.plugin_type(0), "host-device");
    assert_eq!(one.plugins[0]["device"], "vf0");
    for (text, field) in [
        ("", "spec.config: is empty"),
        ("[1]", "spec.config: is not a JSON object"),
        (
            r#"{"name": "n", "type": "t"}"#,
            "spec.config.cniVersion: is missing",
        ),
        (
            r#"{"cniVersion": "0.3.1", "name": "n", "type": "t"}"#,
            "spec.config.cniVersion: \"0.3.1\"",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "a/b", "type": "t"}"#,
            "spec.config.name",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "n"}"#,
            "spec.config.type: is missing",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "n", "type": "../../bin/sh"}"#,
            "spec.config.type: \"../../bin/sh\"",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "n", "plugins": []}"#,
            "spec.config.plugins: has 0",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "a"}, {"type": 3}]}"#,
            "spec.config.plugins[1].type: is not a string",
        ),
        (
            r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "a"}, 4]}"#,
            "spec.config.plugins[1]: is not an object",
        ),
    ] {
        let error = ConfList::parse(text).unwrap_err();
        assert_eq!(error.kind(), CniErrorKind::Config);
        assert!(error.to_string().starts_with(field), "{text}: {error}");
    }
    let huge = format!(
        r#"{{"cniVersion": "1.0.0", "name": "n", "type": "t", "x": "{}"}}"#,
        "a".repeat(70_000)
    );
    assert!(
        ConfList::parse(&huge)
            .unwrap_err()
            .to_string()
            .contains("over 65536")
    );
}

#[test]
fn each_plugin_gets_name_version_device_id_its_capabilities_and_prev_result() {
    let list = conflist();
    let prev = json!({"cniVersion": "1.0.0", "ips": []});
    let first: Value =
        serde_json::from_slice(&plugin_config(&list, 0, Some("0000:3b:02.0"), None).unwrap())
            .unwrap();
    assert_eq!(first["name"], "vf-test1");
    assert_eq!(first["cniVersion"], "1.0.0");
    assert_eq!(first["deviceID"], "0000:3b:02.0");
    assert_eq!(first["runtimeConfig"], json!({"deviceID": "0000:3b:02.0"}));
    assert_eq!(first["ipam"], json!({"type": "static"}));
    assert!(first.get("prevResult").is_none());
    let second: Value = serde_json::from_slice(
        &plugin_config(&list, 1, Some("0000:3b:02.0"), Some(&prev)).unwrap(),
    )
    .unwrap();
    // No deviceID capability declared: no runtimeConfig.
    assert!(second.get("runtimeConfig").is_none());
    assert_eq!(second["deviceID"], "0000:3b:02.0");
    assert_eq!(second["prevResult"], prev);
    assert_eq!(second["x"], 1);
    assert_eq!(
        cni_args(&attachment().args).unwrap(),
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=p"
    );
    assert!(cni_args(&[("A".into(), "b;c=d".into())]).is_err());
}

#[test]
fn add_chains_results_caches_them_and_del_runs_in_reverse_with_the_cached_result() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    plugin(&bin, "first", 1, false);
    plugin(&bin, "second", 2, false);
    let cni = runtime(dir.path());
    let added = cni.add(&conflist(), &attachment()).unwrap();
    assert_eq!(
        log(&bin),
        [
            "first ADD sandbox1 /run/netns/pod1 net1 IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=p",
            "second ADD sandbox1 /run/netns/pod1 net1 IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=p",
        ]
    );
    // The second plugin got the first one's result; the final result is the second one's.
    let first_out = stdin(&bin, "second", "ADD")["prevResult"].clone();
    assert_eq!(first_out["ips"][0]["address"], "192.0.2.1/24");
    assert_eq!(added.result["ips"][0]["address"], "192.0.2.2/24");
    assert_eq!(
        added.network,
        NetworkData {
            interface_name: "net1".into(),
            ips: vec!["192.0.2.2/24".into()],
            hardware_address: "02:00:00:00:00:02".into(),
        }
    );
    // The cache holds what DEL needs, under libcni's file name.
    let cached = cni.cached().unwrap();
    assert_eq!(cached.len(), 1);
    assert_eq!(cached[0].0, "vf-test1-sandbox1-net1");
    let entry = cached[0].1.clone().unwrap();
    assert_eq!(entry.result.as_ref(), Some(&added.result));
    assert_eq!(entry.labels["claim"], "uid-1");
    assert_eq!(entry.device_id.as_deref(), Some("0000:3b:02.0"));

    // DEL: reverse order, both with the cached final result, an absent netns passed empty.
    cni.del(&entry).unwrap();
    let lines = log(&bin);
    assert_eq!(
        lines[2],
        "second DEL sandbox1  net1 IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=p"
    );
    assert!(lines[3].starts_with("first DEL sandbox1  net1 "));
    assert_eq!(stdin(&bin, "first", "DEL")["prevResult"], added.result);
    assert_eq!(stdin(&bin, "second", "DEL")["prevResult"], added.result);
    assert!(cni.cached().unwrap().is_empty());
}

#[test]
fn a_failed_add_runs_del_for_what_was_added_and_forgets_it() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    plugin(&bin, "first", 1, false);
    plugin(&bin, "second", 2, true);
    let cni = runtime(dir.path());
    let error = cni.add(&conflist(), &attachment()).unwrap_err();
    assert_eq!(error.kind(), CniErrorKind::Plugin);
    let text = error.to_string();
    assert!(
        text.contains("network vf-test1 for sandbox sandbox1 (net1)"),
        "{text}"
    );
    assert!(text.contains("CNI plugin second (ADD) failed"), "{text}");
    assert!(text.contains("CNI error 7: no such device (vf0)"), "{text}");
    let commands: Vec<String> = log(&bin)
        .iter()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        commands,
        ["first ADD", "second ADD", "second DEL", "first DEL"]
    );
    // DEL got what the first plugin returned.
    assert_eq!(
        stdin(&bin, "first", "DEL")["prevResult"]["ips"][0]["address"],
        "192.0.2.1/24"
    );
    assert!(cni.cached().unwrap().is_empty());
}

#[test]
fn a_missing_plugin_a_hung_one_and_a_flood_are_errors_of_their_kind() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let mut cni = runtime(dir.path());
    cni.timeout = Duration::from_millis(300);
    let one = |kind: &str| {
        ConfList::parse(&format!(
            r#"{{"cniVersion": "1.0.0", "name": "n", "type": "{kind}"}}"#
        ))
        .unwrap()
    };
    let missing = cni.add(&one("nothere"), &attachment()).unwrap_err();
    assert_eq!(missing.kind(), CniErrorKind::NotFound);
    assert!(
        missing.to_string().contains("\"nothere\" is not in"),
        "{missing}"
    );
    write_exec(&bin.join("hang"), "#!/bin/sh\nexec sleep 30\n");
    let started = std::time::Instant::now();
    let hung = cni.add(&one("hang"), &attachment()).unwrap_err();
    assert_eq!(hung.kind(), CniErrorKind::Timeout, "{hung}");
    assert!(started.elapsed() < Duration::from_secs(10));
    cni.timeout = Duration::from_secs(20);
    write_exec(&bin.join("flood"), "#!/bin/sh\nhead -c 3000000 /dev/zero\n");
    let flood = cni.add(&one("flood"), &attachment()).unwrap_err();
    assert_eq!(flood.kind(), CniErrorKind::Exec);
    assert!(flood.to_string().contains("over 1048576 bytes"), "{flood}");
    write_exec(&bin.join("garbage"), "#!/bin/sh\necho not json\n");
    let garbage = cni.add(&one("garbage"), &attachment()).unwrap_err();
    assert!(garbage.to_string().contains("not JSON"), "{garbage}");
    // A plugin that dies before writing its error result: its status and what it said.
    write_exec(
        &bin.join("panics"),
        "#!/bin/sh\necho 'panic: netlink: no such device'\nexit 3\n",
    );
    let panics = cni.add(&one("panics"), &attachment()).unwrap_err();
    assert_eq!(panics.kind(), CniErrorKind::Plugin, "{panics}");
    let text = panics.to_string();
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(text.contains("panic: netlink: no such device"), "{text}");
    // As Go panics: on stderr, exit status 2.
    write_exec(
        &bin.join("gopanic"),
        "#!/bin/sh\necho 'panic: runtime error: index out of range' >&2\nexit 2\n",
    );
    let panics = cni.add(&one("gopanic"), &attachment()).unwrap_err();
    assert_eq!(panics.kind(), CniErrorKind::Plugin, "{panics}");
    let text = panics.to_string();
    assert!(text.contains("exit status: 2"), "{text}");
    assert!(text.contains("stderr: panic: runtime error"), "{text}");
    // A process it started still holds stderr: what was written before the plugin ended is quoted.
    write_exec(
        &bin.join("daemon"),
        "#!/bin/sh\nsleep 5 >/dev/null &\necho 'panic: started a daemon' >&2\nexit 2\n",
    );
    let started = std::time::Instant::now();
    let panics = cni.add(&one("daemon"), &attachment()).unwrap_err();
    let text = panics.to_string();
    assert!(text.contains("stderr: panic: started a daemon"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(4));
    // A CNI error result whose text (echoing a NetworkAttachmentDefinition's values) would set a
    // terminal's title, clear its screen and forge a log line, and is 900 KB long: cut and escaped.
    let msg = "bad \\u001b]0;pwned\\u0007\\u001b[2J\\nINFO forged";
    let details = "x".repeat(900_000);
    write_exec(
        &bin.join("hostile"),
        &format!(
            "#!/bin/sh\nprintf '%s' '{{\"code\":7,\"msg\":\"{msg}\",\"details\":\"{details}\"}}'\nexit 1\n"
        ),
    );
    let hostile = cni.add(&one("hostile"), &attachment()).unwrap_err();
    assert_eq!(hostile.kind(), CniErrorKind::Plugin, "{hostile}");
    let text = hostile.to_string();
    let head: String = text.chars().take(300).collect();
    assert!(!text.contains(char::is_control), "{head:?}");
    assert!(text.len() < 1024, "{} bytes", text.len());
    assert!(text.contains("CNI error 7: bad \\u001b]0;pwned"), "{head}");
}

#[test]
fn bad_inputs_are_refused_before_any_plugin_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cni = runtime(dir.path());
    for (change, field) in [
        (
            Box::new(|a: &mut Attachment| a.container_id = "../x".into())
                as Box<dyn Fn(&mut Attachment)>,
            "sandbox id",
        ),
        (
            Box::new(|a: &mut Attachment| a.if_name = "a/b".into()),
            "ifName",
        ),
        (
            Box::new(|a: &mut Attachment| a.netns = "rel/ns".into()),
            "netns",
        ),
    ] {
        let mut at = attachment();
        change(&mut at);
        let error = cni.add(&conflist(), &at).unwrap_err();
        assert!(error.to_string().starts_with(field), "{error}");
    }
    assert!(cni.cached().unwrap().is_empty());
}

#[test]
fn del_vanished_runs_del_for_sandboxes_no_longer_alive_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    plugin(&bin, "first", 1, false);
    plugin(&bin, "second", 2, false);
    let cni = runtime(dir.path());
    let mut other = attachment();
    other.container_id = "sandbox2".into();
    cni.add(&conflist(), &attachment()).unwrap();
    cni.add(&conflist(), &other).unwrap();
    // A restarted plugin: a fresh runtime over the same cache, told only sandbox2 is alive.
    let restarted = runtime(dir.path());
    let done = restarted
        .del_vanished(&|e| e.container_id == "sandbox2")
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, "vf-test1-sandbox1-net1");
    assert!(done[0].1.is_ok());
    let left: Vec<String> = restarted
        .cached()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(left, ["vf-test1-sandbox2-net1"]);
    let dels: Vec<String> = log(&bin)
        .into_iter()
        .filter(|l| l.contains(" DEL "))
        .collect();
    assert_eq!(dels.len(), 2);
    assert!(dels.iter().all(|l| l.contains(" sandbox1 ")));
    // A corrupt entry is reported and kept.
    std::fs::write(dir.path().join("state/cni/results/n-x-net1"), "{").unwrap();
    let done = restarted.del_vanished(&|_| true).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].1.as_ref().unwrap_err().kind(), CniErrorKind::Cache);
}

#[test]
fn network_data_takes_the_pod_interface_of_a_0_4_0_or_1_0_0_result() {
    let v040 = json!({"cniVersion": "0.4.0",
        "interfaces": [{"name": "vf0", "mac": "aa:aa:aa:aa:aa:aa"},
                       {"name": "net1", "mac": "02:11:22:33:44:55", "sandbox": "/run/netns/p"}],
        "ips": [{"version": "4", "address": "192.0.2.20/24", "interface": 1},
                {"version": "6", "address": "fd00::20/64", "interface": 1},
                {"version": "4", "address": "10.9.9.9/8", "interface": 0}]});
    let data = CniResult::from_json(&v040).unwrap().network_data("net1");
    assert_eq!(data.ips, ["192.0.2.20/24", "fd00::20/64"]);
    assert_eq!(data.hardware_address, "02:11:22:33:44:55");
    // Without interfaces, every address is the pod interface's; junk addresses are dropped.
    let bare = json!({"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.7/24"}, {"address": "nonsense"}]});
    let data = CniResult::from_json(&bare).unwrap().network_data("net1");
    assert_eq!(data.ips, ["192.0.2.7/24"]);
    assert_eq!(data.hardware_address, "");
    assert_eq!(
        serde_json::to_value(&data).unwrap(),
        json!({"interfaceName": "net1", "ips": ["192.0.2.7/24"]})
    );
}

#[tokio::test]
async fn the_nad_is_read_from_the_claims_namespace_and_its_problems_name_it() {
    let mut api = FakeApi::with_node("node-1");
    api.add_nad(
        "demo",
        "vf-test1",
        r#"{"cniVersion": "1.0.0", "name": "vf-test1", "type": "host-device"}"#,
    );
    api.add_nad(
        "demo",
        "broken",
        r#"{"cniVersion": "9.9.9", "name": "b", "type": "host-device"}"#,
    );
    let state = Arc::new(Mutex::new(api));
    let client = FakeApi::mock_client(
        state.clone(),
        &dra_kubelet_plugin::client::call_timeout_layer(),
    );
    let list = nad::read(&client, "demo", "vf-test1").await.unwrap();
    assert_eq!(list.plugin_type(0), "host-device");
    assert_eq!(
        state.lock().unwrap().log.last().unwrap().short(),
        "GET /apis/k8s.cni.cncf.io/v1/namespaces/demo/network-attachment-definitions/vf-test1"
    );
    let missing = nad::read(&client, "other", "vf-test1").await.unwrap_err();
    assert_eq!(missing.kind(), CniErrorKind::NotFound);
    assert_eq!(
        missing.to_string(),
        "NetworkAttachmentDefinition other/vf-test1 does not exist"
    );
    let broken = nad::read(&client, "demo", "broken").await.unwrap_err();
    assert_eq!(broken.kind(), CniErrorKind::Config);
    assert!(
        broken.to_string().starts_with(
            "NetworkAttachmentDefinition demo/broken: spec.config.cniVersion: \"9.9.9\""
        ),
        "{broken}"
    );
}

#[test]
fn a_fifo_in_the_cache_is_an_unreadable_entry_at_once_not_a_listing_that_waits() {
    let dir = tempfile::tempdir().unwrap();
    let cni = runtime(dir.path());
    std::fs::create_dir_all(&cni.cache_dir).unwrap();
    let fifo = cni.cache_dir.join("vf-test1-blocker-net9");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(cni.cached().unwrap());
    });
    let cached = wait
        .recv_timeout(Duration::from_secs(10))
        .expect("the listing waited on the FIFO");
    assert_eq!(cached.len(), 1);
    assert_eq!(cached[0].0, "vf-test1-blocker-net9");
    assert!(cached[0].1.is_err());
}

/// `{"x": [[...]]}` with `depth` arrays, inside `prefix` and `suffix`.
fn nested(prefix: &str, depth: usize, suffix: &str) -> String {
    format!("{prefix}{}{}{suffix}", "[".repeat(depth), "]".repeat(depth))
}

/// The deepest `make(depth)` the JSON reader takes.
fn deepest(make: impl Fn(usize) -> String) -> usize {
    (1..200)
        .take_while(|&d| serde_json::from_str::<Value>(&make(d)).is_ok())
        .last()
        .unwrap()
}

/// A user's NAD nested as deep as the JSON reader takes is one level too deep inside a cache entry:
/// refused before any plugin runs (before: ADD ran and the entry could not be read back, so its
/// DEL never ran).
#[test]
fn a_config_too_deep_for_the_cache_is_refused_before_add() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    plugin(&bin, "first", 1, false);
    let make = |d| {
        nested(
            r#"{"cniVersion":"1.0.0","name":"deep","type":"first","x":"#,
            d,
            "}",
        )
    };
    let list = ConfList::parse(&make(deepest(make))).unwrap();
    let cni = runtime(dir.path());
    let error = cni.add(&list, &attachment()).unwrap_err();
    assert_eq!(error.kind(), CniErrorKind::Cache, "{error}");
    assert!(error.to_string().contains("would not read back"), "{error}");
    assert!(log(&bin).is_empty(), "no plugin ran: {:?}", log(&bin));
    assert!(cni.cached().unwrap().is_empty());
}

/// A plugin's result nested as deep as the JSON reader takes cannot be cached: its ADD is undone
/// at once (DEL with that result), not left without what its DEL needs.
#[test]
fn a_result_too_deep_for_the_cache_is_undone_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let make = |d| nested(r#"{"cniVersion":"1.0.0","x":"#, d, "}");
    let output = make(deepest(make));
    let d = bin.display();
    write_exec(
        &bin.join("deep"),
        &format!(
            "#!/bin/sh\necho \"deep $CNI_COMMAND\" >> {d}/log\ncat > /dev/null\n\
             if [ \"$CNI_COMMAND\" = ADD ]; then printf '%s' '{output}'; fi\n"
        ),
    );
    let list = ConfList::parse(r#"{"cniVersion":"1.0.0","name":"deep","type":"deep"}"#).unwrap();
    let cni = runtime(dir.path());
    let error = cni.add(&list, &attachment()).unwrap_err();
    assert_eq!(error.kind(), CniErrorKind::Cache, "{error}");
    assert_eq!(log(&bin), ["deep ADD", "deep DEL"]);
    assert!(cni.cached().unwrap().is_empty());
}

/// An unreadable entry of the sandbox does not fail its stop (reading it again cannot succeed, and
/// CRI-O would fail the pod's stop at every retry): logged, kept for an operator.
#[test]
fn an_unreadable_entry_of_a_sandbox_is_kept_without_failing_its_stop() {
    let dir = tempfile::tempdir().unwrap();
    let cni = runtime(dir.path());
    std::fs::create_dir_all(&cni.cache_dir).unwrap();
    let name = "vf-test1-sandbox1-net1";
    std::fs::write(cni.cache_dir.join(name), "{").unwrap();
    assert!(cni.del_sandbox("sandbox1").unwrap().is_empty());
    assert!(cni.cache_dir.join(name).exists(), "kept");
    assert!(cni.del_sandbox("sandbox2").unwrap().is_empty());
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet), within 5 s.
fn ends(pid: &str) -> bool {
    let stat = format!("/proc/{}/stat", pid.trim());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        match std::fs::read_to_string(&stat) {
            Err(_) => return true,
            Ok(text)
                if text
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                return true;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

/// A plugin past its timeout is killed with what it started (a delegated IPAM plugin), not alone.
#[test]
fn a_plugin_past_its_timeout_is_killed_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let d = bin.display();
    write_exec(
        &bin.join("spawner"),
        &format!(
            "#!/bin/sh\nsleep 30 > /dev/null 2>&1 &\necho $! > {d}/child-$CNI_COMMAND.pid\n\
             exec sleep 30\n"
        ),
    );
    let mut cni = runtime(dir.path());
    cni.timeout = Duration::from_millis(300);
    let list = ConfList::parse(r#"{"cniVersion":"1.0.0","name":"n","type":"spawner"}"#).unwrap();
    let error = cni.add(&list, &attachment()).unwrap_err();
    assert_eq!(error.kind(), CniErrorKind::Timeout, "{error}");
    for command in ["ADD", "DEL"] {
        let pid = std::fs::read_to_string(bin.join(format!("child-{command}.pid"))).unwrap();
        assert!(
            ends(&pid),
            "the {command} plugin's child {} still runs",
            pid.trim()
        );
    }
}

/// The children a plugin past its timeout started are reaped, not left as zombies of this process:
/// the plugin runs as PID 1 of its container, which inherits them (played here by making the test
/// process their subreaper), and a zombie nobody waits for holds one PID of the pod's limit for good.
#[test]
fn the_children_of_a_plugin_past_its_timeout_are_reaped() {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let d = bin.display();
    write_exec(
        &bin.join("spawner"),
        &format!(
            "#!/bin/sh\nsleep 30 > /dev/null 2>&1 &\necho $! > {d}/child-$CNI_COMMAND.pid\n\
             exec sleep 30\n"
        ),
    );
    let mut cni = runtime(dir.path());
    cni.timeout = Duration::from_millis(300);
    let list = ConfList::parse(r#"{"cniVersion":"1.0.0","name":"n","type":"spawner"}"#).unwrap();
    let error = cni.add(&list, &attachment()).unwrap_err();
    assert_eq!(error.kind(), CniErrorKind::Timeout, "{error}");
    for command in ["ADD", "DEL"] {
        let pid = std::fs::read_to_string(bin.join(format!("child-{command}.pid"))).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&stat).exists() {
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            assert!(
                std::time::Instant::now() < deadline,
                "the {command} plugin's child {} is left: {state}",
                pid.trim()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A cache that cannot be listed (EIO, EMFILE, EACCES; here ENOTDIR, the cache directory a file)
/// is an error naming it, never "nothing cached": a stop would forget the sandbox without its DEL
/// (an IPAM lease leaked, a VF left with the pod's VLAN and MAC). A missing cache is empty.
#[test]
fn a_cache_that_cannot_be_listed_is_an_error_not_an_empty_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut cni = runtime(dir.path());
    assert!(cni.cached().unwrap().is_empty(), "missing: empty");
    assert!(cni.del_sandbox("sandbox1").unwrap().is_empty());
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    cni.cache_dir = file.clone();
    let error = cni.cached().unwrap_err();
    assert_eq!(error.kind(), CniErrorKind::Cache);
    assert!(
        error
            .to_string()
            .contains(&format!("listing {}", file.display())),
        "{error}"
    );
    let error = cni.del_sandbox("sandbox1").unwrap_err();
    assert_eq!(error.kind(), CniErrorKind::Cache, "{error}");
    assert!(cni.del_vanished(&|_| false).is_err());
}

/// A plugin killed while writing a cache entry leaves its temp file (up to 2 MiB; its name holds
/// the sandbox id, so no later write replaces it): swept at start, the entries kept.
#[test]
fn temp_files_of_interrupted_cache_writes_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let cni = runtime(dir.path());
    assert!(cni.remove_stale_temps().unwrap().is_empty(), "no cache yet");
    std::fs::create_dir_all(&cni.cache_dir).unwrap();
    let stale = cni
        .cache_dir
        .join(".vf-test1-sandbox1-net1.0123456789abcdef.tmp");
    std::fs::write(&stale, "{\"kind\":").unwrap();
    let entry = cni.cache_dir.join("vf-test1-sandbox2-net1");
    std::fs::write(&entry, "{").unwrap();
    assert_eq!(
        cni.remove_stale_temps().unwrap(),
        std::slice::from_ref(&stale)
    );
    assert!(!stale.exists());
    assert!(entry.exists(), "an entry is never swept, readable or not");
}
