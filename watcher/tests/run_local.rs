//! `stella pack run`: every step kind and option, executed for real on this machine.

use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::support::{Ran, Scratch, all_gone, marker, pids_with, shared_dir, wait_for_process};

fn exec(id: &str, args: &str) -> String {
    format!("    - {{ id: {id}, run: {{ uses: builtin:exec, with: {{ argv: [{args}] }} }} }}\n")
}

fn shell(id: &str, script: &str) -> String {
    format!(
        "    - id: {id}\n      run: {{ uses: builtin:shell, with: {{ script: {} }} }}\n",
        serde_json::to_string(script).unwrap()
    )
}

fn wait_for_event(s: &Scratch, kind: &str, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(s.events_path()).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains(&format!("\"type\":\"{kind}\"")) && l.contains(&format!("\"step\":\"{step}\"")))
        {
            return;
        }
        assert!(Instant::now() < deadline, "no {kind} for {step}:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn outputs_flow_from_one_step_into_the_next() {
    let steps = shell("produce", "echo greeting=hello >> \"$STELLA_OUTPUT\"")
        + &exec(
            "consume",
            "echo, \"{{ steps.produce.outputs.greeting }} {{ inputs.name }} $STELLA_INPUT_NAME\"",
        );
    let r = Scratch::new().pack(&steps).run(&[]);
    r.code(0);
    assert_eq!(
        r.logs("consume"),
        ["hello world $STELLA_INPUT_NAME"],
        "exec passes argv without a shell"
    );
    assert_eq!(r.state().state.as_str(), "succeeded");
    let s = Scratch::new().pack(&shell("env", "echo \"$STELLA_INPUT_NAME/$STELLA_STEP_ID\""));
    assert_eq!(s.run(&[]).code(0).logs("env"), ["world/env"]);
}

#[test]
fn when_skips_steps_at_plan_time_and_at_run_time() {
    let steps = format!(
        "{}    - id: planned-off\n      when: \"{{{{ inputs.flag }}}}\"\n      run: {{ uses: builtin:exec, with: {{ argv: [false] }} }}\n    - id: runtime-off\n      when: \"{{{{ steps.probe.outputs.ok == 'yes' }}}}\"\n      run: {{ uses: builtin:exec, with: {{ argv: [false] }} }}\n",
        shell("probe", "echo ok=no >> \"$STELLA_OUTPUT\"")
    );
    let r = Scratch::new().pack(&steps).run(&[]);
    r.code(0);
    assert_eq!(r.step("planned-off"), "skipped");
    assert_eq!(r.step("runtime-off"), "skipped");
}

/// Two steps that each wait for the other's flag file: they pass only when run at once.
fn rendezvous(me: &str, other: &str) -> String {
    format!("touch {me}.flag; for i in $(seq 200); do [ -f {other}.flag ] && exit 0; sleep 0.05; done; exit 1")
}

/// A step that fails if another holds the lock: proves steps did not overlap.
const EXCLUSIVE: &str = "mkdir lock || exit 9; sleep 0.2; rmdir lock";

#[test]
fn parallel_steps_run_at_the_same_time() {
    let steps = format!(
        "    - id: both\n      parallel:\n        maxParallel: 2\n        steps:\n          - {{ id: left, run: {{ uses: builtin:shell, with: {{ script: {} }} }} }}\n          - {{ id: right, run: {{ uses: builtin:shell, with: {{ script: {} }} }} }}\n",
        serde_json::to_string(&rendezvous("left", "right")).unwrap(),
        serde_json::to_string(&rendezvous("right", "left")).unwrap()
    );
    Scratch::new().pack(&steps).run(&[]).code(0);
}

#[test]
fn max_parallel_and_the_global_limit_serialise_steps() {
    let group = |max: u32| {
        let child = |id: &str| {
            format!(
                "          - {{ id: {id}, run: {{ uses: builtin:shell, with: {{ script: {} }} }} }}\n",
                serde_json::to_string(EXCLUSIVE).unwrap()
            )
        };
        format!(
            "    - id: group\n      parallel:\n        maxParallel: {max}\n        steps:\n{}{}{}",
            child("a"),
            child("b"),
            child("c")
        )
    };
    Scratch::new().pack(&group(1)).run(&[]).code(0);
    Scratch::new().pack(&group(3)).run(&["--max-steps", "1"]).code(0);
}

#[test]
fn a_failure_in_a_parallel_group_stops_its_siblings() {
    let m = marker();
    let steps = format!(
        "    - id: group\n      parallel:\n        maxParallel: 2\n        steps:\n          - {{ id: slow, run: {{ uses: builtin:shell, with: {{ script: \"exec -a {m} sleep 60\" }} }} }}\n          - {{ id: broken, run: {{ uses: builtin:shell, with: {{ script: \"sleep 0.3; exit 4\" }} }} }}\n          - {{ id: never, run: {{ uses: builtin:exec, with: {{ argv: [touch, never.flag] }} }} }}\n    - {{ id: after, run: {{ uses: builtin:exec, with: {{ argv: [true] }} }} }}\n"
    );
    let s = Scratch::new().pack(&steps);
    let t0 = Instant::now();
    let r = s.run(&[]);
    r.code(1)
        .stderr_has("error[ERR_STEP_FAILED]")
        .stderr_has("step `broken` failed: exited with status 4");
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "the slow sibling was not terminated"
    );
    assert_eq!(r.step("slow"), "cancelled");
    assert_eq!(r.step("broken"), "failed");
    assert_eq!(r.step("never"), "cancelled");
    assert!(r.step_events("after", "step.started").is_empty());
    assert!(!s.run_dir().join("workspace/never.flag").exists());
    assert!(all_gone(&m, Duration::from_secs(10)), "the slow sibling lives on");
}

#[test]
fn continue_on_error_lets_the_run_go_on() {
    let steps = format!(
        "    - id: group\n      parallel:\n        continueOnError: true\n        steps:\n          - {{ id: bad, run: {{ uses: builtin:exec, with: {{ argv: [false] }} }} }}\n          - {{ id: good, run: {{ uses: builtin:exec, with: {{ argv: [true] }} }} }}\n    - id: optional\n      continueOnError: true\n      run: {{ uses: builtin:exec, with: {{ argv: [false] }} }}\n{}",
        exec("last", "true")
    );
    let r = Scratch::new().pack(&steps).run(&[]);
    r.code(0);
    assert_eq!(
        (
            r.step("bad").as_str(),
            r.step("good").as_str(),
            r.step("optional").as_str(),
            r.step("last").as_str()
        ),
        ("failed", "succeeded", "failed", "succeeded")
    );
}

#[test]
fn retries_record_every_attempt() {
    let steps = "    - id: flaky\n      retries: { maxAttempts: 3, backoff: 10ms }\n      run: { uses: builtin:shell, with: { script: \"n=$(cat n 2>/dev/null || echo 0); echo $((n+1)) > n; [ $n -ge 2 ]\" } }\n";
    let r = Scratch::new().pack(steps).run(&[]);
    r.code(0);
    assert_eq!(r.step_events("flaky", "step.started").len(), 3);
    assert_eq!(r.step_events("flaky", "step.retrying").len(), 2);
    assert_eq!(r.state().step("flaky").unwrap().attempts, 3);
    let always = "    - id: hopeless\n      retries: { maxAttempts: 2, backoff: 0s }\n      run: { uses: builtin:exec, with: { argv: [false] } }\n";
    let r = Scratch::new().pack(always).run(&[]);
    r.code(1);
    assert_eq!(r.state().step("hopeless").unwrap().attempts, 2);
}

#[test]
fn a_timeout_kills_the_whole_process_group_grandchildren_included() {
    let m = marker();
    let steps = format!(
        "    - id: hang\n      timeout: 500ms\n      run: {{ uses: builtin:shell, with: {{ script: \"trap '' TERM; bash -c 'trap \\\"\\\" TERM; exec -a {m} sleep 60' & wait\" }} }}\n"
    );
    let s = Scratch::new().pack(&steps);
    let r = s.run(&["--kill-grace", "300ms"]);
    r.code(1).stderr_has("error[ERR_STEP_TIMEOUT]");
    assert!(
        all_gone(&m, Duration::from_secs(10)),
        "a grandchild survived the timeout: {:?}",
        pids_with(&m)
    );
    assert_eq!(
        r.state().step("hang").unwrap().code.as_deref(),
        Some("ERR_STEP_TIMEOUT")
    );
}

#[test]
fn a_map_runs_once_per_item_with_the_item_quoted() {
    let steps = "    - id: each\n      map:\n        items: \"{{ inputs.items }}\"\n        maxParallel: 2\n        step: { id: one, run: { uses: builtin:shell, with: { script: \"printf '%s' {{ item }}; echo\" } } }\n";
    let r = Scratch::new()
        .pack(steps)
        .inputs("items: [a, \"b c\", \"$(touch pwned)\"]\n")
        .run(&[]);
    r.code(0);
    assert_eq!(r.logs("each[0]::one"), ["a"]);
    assert_eq!(r.logs("each[1]::one"), ["b c"]);
    assert_eq!(r.logs("each[2]::one"), ["$(touch pwned)"]);
    assert_eq!(r.step("each"), "succeeded");
}

#[test]
fn hostile_inputs_cannot_inject_shell() {
    let hostile = "x'; touch pwned1; echo '$(touch pwned2)`touch pwned3`\nrm -rf ~ #";
    let s = Scratch::new()
        .pack(&shell("echo", "printf '%s' {{ inputs.name }} > out.txt"))
        .inputs(&format!("name: {}\n", serde_json::to_string(hostile).unwrap()));
    s.run(&[]).code(0);
    let ws = s.run_dir().join("workspace");
    assert_eq!(std::fs::read_to_string(ws.join("out.txt")).unwrap(), hostile);
    for f in ["pwned1", "pwned2", "pwned3"] {
        assert!(!ws.join(f).exists(), "{f} was created: the input ran as shell");
    }
}

#[test]
fn secrets_are_masked_in_every_form_everywhere() {
    let secret = "s3cr3t-V@lue/with+chars";
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let url = "s3cr3t-V%40lue%2Fwith%2Bchars";
    let script = format!(
        "echo plain $STELLA_SECRET_TOKEN; echo b64 {b64}; echo url {url}; printf 's3cr3t-V@'; sleep 0.2; printf 'lue/with+chars\\n'; echo leaked=$STELLA_SECRET_TOKEN >> \"$STELLA_OUTPUT\"; echo $STELLA_SECRET_TOKEN >&2; exit 3"
    );
    let s = Scratch::new().pack(&shell("leaky", &script)).secret(secret);
    let r = s.run(&[]);
    r.code(1);
    let all = std::fs::read_to_string(s.events_path()).unwrap() + &r.stdout() + &r.stderr();
    for form in [secret, &b64, url, "lue/with+chars"] {
        assert!(!all.contains(form), "`{form}` leaked:\n{all}");
    }
    let logs = r.logs("leaky");
    assert!(
        logs.contains(&"plain ***".to_string())
            && logs.contains(&"b64 ***".to_string())
            && logs.contains(&"url ***".to_string()),
        "{logs:?}"
    );
    assert!(
        logs.contains(&"***".to_string()),
        "the secret split across two writes is masked: {logs:?}"
    );
}

#[test]
fn step_outputs_holding_a_secret_are_masked_and_artifacts_refused() {
    let secret = "hunter2-hunter2";
    let steps = "    - id: out\n      outputs: { dump: dump.txt }\n      run: { uses: builtin:shell, with: { script: \"echo pw=$STELLA_SECRET_TOKEN >> $STELLA_OUTPUT; echo $STELLA_SECRET_TOKEN > dump.txt\" } }\n";
    let s = Scratch::new().pack(steps).secret(secret);
    let r = s.run(&[]);
    r.code(1).stderr_has("error[ERR_ARTIFACT_SECRET]");
    assert!(!std::fs::read_to_string(s.events_path()).unwrap().contains(secret));
    assert!(!s.run_dir().join("artifacts/out/dump").exists());
}

#[test]
fn a_missing_required_secret_stops_before_anything_runs() {
    let s = Scratch::new()
        .file("pack/pack.yaml", "apiVersion: stella/v1\nkind: TaskPack\nmetadata: { name: t, version: 1.0.0 }\nspec:\n  secrets: [{ name: apiKey }]\n  steps:\n    - { id: a, run: { uses: builtin:exec, with: { argv: [touch, ran] } } }\n");
    let r = s.run(&[]);
    r.code(2)
        .stderr_has("error[ERR_PACK_SECRET_MISSING]")
        .stderr_has("STELLA_SECRET_APIKEY");
    assert!(r.events().is_empty());
    let r = s.env("STELLA_SECRET_APIKEY", "from-env").run(&[]);
    r.code(0);
}

#[test]
fn artifacts_are_captured_with_their_digest() {
    let steps = "    - id: report\n      outputs: { summary: out/summary.json }\n      run: { uses: builtin:shell, with: { script: \"mkdir -p out; echo '{\\\"ok\\\":true}' > out/summary.json\" } }\n";
    let s = Scratch::new().pack(steps);
    let r = s.run(&[]);
    r.code(0);
    let st = r.state();
    let a = &st.step("report").unwrap().artifacts[0];
    assert_eq!(
        (a.name.as_str(), a.path.as_str(), a.size),
        ("summary", "artifacts/report/summary", 12)
    );
    let bytes = std::fs::read(s.run_dir().join(&a.path)).unwrap();
    assert_eq!(a.sha256, stella_engine::pack::sha256_hex(&bytes));
}

#[test]
fn artifact_paths_that_escape_are_refused() {
    let escape = "    - id: sneaky\n      outputs: { loot: loot }\n      run: { uses: builtin:shell, with: { script: \"ln -s /etc/passwd loot\" } }\n";
    let r = Scratch::new().pack(escape).run(&[]);
    r.code(1).stderr_has("error[ERR_ARTIFACT_PATH]");
    let missing = "    - id: lazy\n      outputs: { report: report.json }\n      run: { uses: builtin:exec, with: { argv: [true] } }\n";
    Scratch::new()
        .pack(missing)
        .run(&[])
        .code(1)
        .stderr_has("error[ERR_ARTIFACT_MISSING]");
    let big = "    - id: big\n      outputs: { blob: blob }\n      run: { uses: builtin:shell, with: { script: \"head -c 11000000 /dev/zero > blob\" } }\n";
    Scratch::new()
        .pack(big)
        .run(&[])
        .code(1)
        .stderr_has("error[ERR_ARTIFACT_TOO_LARGE]");
}

#[test]
fn approval_gates_wait_locally_unless_approved_for_development() {
    let steps = format!(
        "{}    - {{ id: gate, gate: {{ approval: {{ id: review, message: \"ok to go?\" }} }} }}\n{}",
        exec("before", "true"),
        exec("after", "true")
    );
    let s = Scratch::new().pack(&steps);
    let r = s.run(&[]);
    r.code(3).stdout_has("needs approval `review`");
    assert_eq!(r.state().state.as_str(), "waiting");
    assert_eq!(r.state().waiting_gate.as_deref(), Some("gate"));
    let r = s.run(&["--resume", "--approve-local"]);
    r.code(0);
    let approved = r.step_events("gate", "gate.approved");
    assert_eq!(approved[0].get("local"), Some(&serde_json::json!(true)));
    assert_eq!(
        r.step_events("before", "step.started").len(),
        1,
        "finished steps are not run again on resume"
    );
}

#[test]
fn policy_gates_halt_or_continue() {
    let halt = format!(
        "{}    - {{ id: check, gate: {{ policy: {{ expr: \"{{{{ steps.count.outputs.n | int < 3 }}}}\", message: too many }} }} }}\n{}",
        shell("count", "echo n=5 >> $STELLA_OUTPUT"),
        exec("after", "true")
    );
    let r = Scratch::new().pack(&halt).run(&[]);
    r.code(1).stderr_has("error[ERR_POLICY_FAILED]").stderr_has("too many");
    assert!(r.step_events("after", "step.started").is_empty());
    let cont = halt.replace("message: too many", "message: too many, failAction: continue");
    let r = Scratch::new().pack(&cont).run(&[]);
    r.code(0);
    assert_eq!(r.step("check"), "failed");
    assert_eq!(r.step("after"), "succeeded");
}

#[test]
fn a_pack_file_changed_during_the_run_fails_the_next_step() {
    let steps = format!(
        "{}{}",
        shell("tamper", "chmod u+w helper.sh; echo 'echo evil' > helper.sh"),
        exec("use", "bash, helper.sh")
    );
    let s = Scratch::new().pack(&steps).file("pack/helper.sh", "echo good\n");
    let r = s.run(&[]);
    r.code(1).stderr_has("error[ERR_PACK_HASH_MISMATCH]");
    assert!(r.step_events("use", "step.started").is_empty());
}

#[test]
fn bundle_ingest_verifies_and_stages() {
    let bundle = "offline update payload\n";
    let sum = stella_engine::pack::sha256_hex(bundle.as_bytes());
    let steps = "    - id: ingest\n      run: { uses: builtin:bundle.ingest, with: { path: \"{{ inputs.name }}\", checksumSha256: \"{{ inputs.items[0] }}\" } }\n    - { id: look, run: { uses: builtin:shell, with: { script: \"cat artifacts/bundles/*/update.bin\" } } }\n";
    let s = Scratch::new().pack(steps).file("update.bin", bundle);
    let path = s.path().join("update.bin").display().to_string();
    let s = s.inputs(&format!("name: {path}\nitems: [\"{sum}\"]\n"));
    let r = s.run(&[]);
    r.code(0);
    assert_eq!(r.logs("look"), ["offline update payload"]);
    let st = r.state();
    let names: Vec<&str> = st
        .step("ingest")
        .unwrap()
        .artifacts
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(names, ["update.bin", "metadata.json"]);
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            s.run_dir()
                .join(format!("workspace/artifacts/bundles/{sum}/metadata.json")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["sha256"], sum.as_str());

    let wrong = Scratch::new().pack(steps).file("update.bin", "tampered\n");
    let wrong_path = wrong.path().join("update.bin").display().to_string();
    wrong
        .inputs(&format!("name: {wrong_path}\nitems: [\"{sum}\"]\n"))
        .run(&[])
        .code(1)
        .stderr_has("error[ERR_BUNDLE_CHECKSUM_MISMATCH]");
    Scratch::new()
        .pack(steps)
        .inputs(&format!("name: /nonexistent/update.bin\nitems: [\"{sum}\"]\n"))
        .run(&[])
        .code(1)
        .stderr_has("error[ERR_BUNDLE_NOT_FOUND]");
}

#[test]
fn a_run_killed_mid_step_resumes_without_repeating_finished_steps() {
    let (m, shared) = (marker(), shared_dir());
    let at = shared.display();
    let steps = format!(
        "{}{}{}",
        shell("first", &format!("echo ran >> {at}/first.count")),
        shell(
            "second",
            &format!("echo ran >> {at}/second.count; if [ ! -f once ]; then touch once; exec -a {m} sleep 60; fi")
        ),
        shell("third", &format!("echo ran >> {at}/third.count"))
    );
    let s = Scratch::new().pack(&steps);
    let mut child = s.spawn_quiet(&[]);
    wait_for_event(&s, "step.started", "second");
    wait_for_process(&m);
    child.kill().unwrap(); // SIGKILL: no chance to record anything
    child.wait().unwrap();
    // The interrupted step dies with its runner, so the resumed run never runs beside it.
    assert!(all_gone(&m, Duration::from_secs(10)), "the step outlived its runner");
    let interrupted = crate::support::Ran::from(std::process::Command::new("true").output().unwrap(), s.events_path());
    assert_eq!(interrupted.state().state.as_str(), "running");

    let r: Ran = s.run(&["--resume"]);
    r.code(0);
    let count = |f: &str| {
        std::fs::read_to_string(shared.join(f))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(
        (count("first.count"), count("second.count"), count("third.count")),
        (1, 2, 1)
    );
    assert_eq!(r.events().iter().filter(|e| e.kind == "run.resumed").count(), 1);
    let seqs: Vec<u64> = r.events().iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence numbers continue: {seqs:?}"
    );
}

#[test]
fn ctrl_c_cancels_cleanly() {
    let m = marker();
    let s = Scratch::new().pack(&shell("wait", &format!("exec -a {m} sleep 60")));
    let child = s
        .command(&[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_event(&s, "step.started", "wait");
    wait_for_process(&m);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let r = Ran::from(out, s.events_path());
    r.code(1).stderr_has("error[ERR_RUN_CANCELLED]");
    assert_eq!(r.state().state.as_str(), "cancelled");
    assert!(all_gone(&m, Duration::from_secs(10)));
}

#[test]
fn resuming_with_different_inputs_is_refused() {
    let steps = format!(
        "{}    - {{ id: gate, gate: {{ approval: {{ id: review }} }} }}\n{}",
        exec("before", "true"),
        shell("after", "echo {{ inputs.name }}")
    );
    let s = Scratch::new().pack(&steps);
    s.run(&[]).code(3);
    let changed = s.inputs("name: mallory\n");
    let r = changed.run(&["--resume", "--approve-local"]);
    r.code(1).stderr_has("error[ERR_PACK_HASH_MISMATCH]");
    assert!(
        r.step_events("after", "step.started").is_empty(),
        "nothing of the different plan ran"
    );
}

#[test]
fn a_secret_in_a_failure_message_is_masked_on_the_terminal_too() {
    let s = Scratch::new()
        .pack(&shell("bad", "echo \"x $STELLA_SECRET_TOKEN=1\" >> $STELLA_OUTPUT"))
        .secret("hunter2hunter2");
    let r = s.run(&[]);
    r.code(1);
    assert!(
        !r.stderr().contains("hunter2") && !r.stdout().contains("hunter2"),
        "{}{}",
        r.stdout(),
        r.stderr()
    );
}

#[test]
fn part_of_a_secret_in_a_malformed_output_line_is_never_quoted() {
    let secret = "Zq8-Kx2-Wm5-Pt7-Rb4";
    let script = "echo \"${STELLA_SECRET_TOKEN:0:11} tail=1\" >> $STELLA_OUTPUT";
    let s = Scratch::new().pack(&shell("leaky", script)).secret(secret);
    let r = s.run(&[]);
    r.code(1).stderr_has("$STELLA_OUTPUT line 1");
    let events = std::fs::read_to_string(s.events_path()).unwrap();
    let everything = format!("{events}{}{}", r.stdout(), r.stderr());
    for start in 0..=secret.len() - 4 {
        let part = &secret[start..start + 4];
        assert!(
            !everything.contains(part),
            "`{part}` of the secret leaked:\n{everything}"
        );
    }
}

#[test]
fn a_torn_last_event_line_does_not_break_resume() {
    let steps = format!(
        "{}    - {{ id: gate, gate: {{ approval: {{ id: review }} }} }}\n",
        exec("before", "true")
    );
    let s = Scratch::new().pack(&steps);
    s.run(&[]).code(3);
    let mut text = std::fs::read_to_string(s.events_path()).unwrap();
    text.push_str("{\"seq\":99,\"ts\":\"2026-");
    std::fs::write(s.events_path(), text).unwrap();
    s.run(&["--resume", "--approve-local"]).code(0);
    let again = crate::support::Ran::from(std::process::Command::new("true").output().unwrap(), s.events_path());
    assert_eq!(again.state().state.as_str(), "succeeded");
}

#[test]
fn a_resumed_run_still_at_its_gate_reads_as_waiting() {
    let steps = format!(
        "{}    - {{ id: gate, gate: {{ approval: {{ id: review }} }} }}\n",
        exec("before", "true")
    );
    let s = Scratch::new().pack(&steps);
    s.run(&[]).code(3);
    let r = s.run(&["--resume"]);
    r.code(3);
    assert_eq!(r.state().state.as_str(), "waiting");
}

#[test]
fn resuming_with_other_inputs_is_refused_and_writes_nothing() {
    let steps = format!(
        "{}    - {{ id: gate, gate: {{ approval: {{ id: review }} }} }}\n",
        exec("before", "true")
    );
    let s = Scratch::new().pack(&steps).inputs("name: first\n");
    s.run(&[]).code(3);
    let before = std::fs::read(s.events_path()).unwrap();
    let s = s.inputs("name: second\n");
    let r = s.run(&["--resume", "--approve-local"]);
    r.code(1);
    let err = String::from_utf8_lossy(&r.out.stderr).into_owned();
    assert!(err.contains("error[ERR_PACK_HASH_MISMATCH]"), "{err}");
    assert!(
        err.contains("events.ndjson: the run in this file was planned as sha256:"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(s.events_path()).unwrap(),
        before,
        "the events file is unchanged"
    );
}
