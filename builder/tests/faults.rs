//! Faults through the real binaries: `kill -9` and Ctrl-C in the middle of a
//! build or a song, a full disk, engines on a read-only mount, two songs from
//! one engine folder at once, and the messages a user sees for bad input.
//!
//! The disk tests mount small tmpfs file systems, which needs root (the CI
//! container runs as root); without it they fail with a message saying so
//! rather than pass untested.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use heart::manifest::{Manifest, Verify};
use heart_test_support::{bin, build, fixture_build_args as build_args, fixture_engines as engines, run};

fn song_args(engines: &Path, out: &Path, seed: u64) -> Vec<String> {
    [
        "--engines",
        engines.to_str().unwrap(),
        "--tags",
        "piano,happy",
        "--lyrics",
        "[verse] la la la",
        "--duration",
        "8",
        "--seed",
        &seed.to_string(),
        "-q",
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// Runs `heart-run` for one song.
fn song(engines: &Path, out: &Path, seed: u64) -> Output {
    let args = song_args(engines, out, seed);
    run("heart-run", &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The stderr of a run that must have failed with exit code 1.
fn failure(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    err
}

fn spawn(bin: &Path, args: &[String]) -> Child {
    Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts")
}

fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
}

/// Waits until `ready` holds (polling every 2 ms), failing after 60 s or if the
/// process exits first.
fn wait_for(child: &mut Child, what: &str, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the process ended ({status}) before {what}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A tmpfs mounted for the life of the value (lazily unmounted on drop).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("`mount` runs");
        assert!(
            o.status.success(),
            "this test needs to mount a tmpfs (run it as root, as CI does): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Self(dir.to_path_buf())
    }

    fn remount_read_only(&self) {
        let o = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(o.status.success(), "remount ro: {}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_build_killed_outright_leaves_no_engine_and_the_next_build_cleans_up() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("engines");
    let bin = Path::new(env!("CARGO_BIN_EXE_heart-build"));
    let mut killed_in_flight = 0;
    for round in 0..3 {
        let mut child = spawn(bin, &build_args(&out));
        let tmp = root.path().join(format!(".engines.tmp-{}", child.id()));
        // Later rounds let the build write more files before the kill.
        wait_for(&mut child, "the build writes its temporary folder", || {
            tmp.is_dir() && std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) > round
        });
        child.kill().unwrap(); // SIGKILL: no handler runs
        child.wait().unwrap();
        assert!(!out.exists(), "round {round}: a killed build never creates --out");
        if tmp.exists() {
            killed_in_flight += 1;
            assert!(
                !tmp.join("manifest.toml").exists() || Manifest::load(&tmp, Verify::Full).is_ok(),
                "a leftover holds no half-written engine that loads"
            );
        }
    }
    assert!(killed_in_flight > 0, "at least one build was killed mid-write");

    let args = build_args(&out);
    build(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(names(root.path()), ["engines"], "the next build removed the leftovers");
    Manifest::load(&out, Verify::Full).expect("and wrote a complete engine folder");

    // Killed while replacing an existing folder: the old one stays usable.
    let mut args = build_args(&out);
    args.push("--force".into());
    let mut child = spawn(bin, &args);
    let tmp = root.path().join(format!(".engines.tmp-{}", child.id()));
    wait_for(&mut child, "the rebuild starts writing", || tmp.is_dir());
    child.kill().unwrap();
    child.wait().unwrap();
    Manifest::load(&out, Verify::Full).expect("the previous engine folder is intact");
}

#[test]
fn an_interrupted_build_exits_130_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("engines");
    let mut child = spawn(Path::new(env!("CARGO_BIN_EXE_heart-build")), &build_args(&out));
    let tmp = root.path().join(format!(".engines.tmp-{}", child.id()));
    wait_for(&mut child, "the build writes its temporary folder", || {
        std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) > 0
    });
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted; nothing was written"), "{err}");
    assert!(names(root.path()).is_empty(), "{:?}", names(root.path()));
}

#[test]
fn a_full_disk_while_building_is_a_clear_error_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&root.path().join("disk"), "1m");
    let out = disk.0.join("engines");
    let o = run(
        "heart-build",
        &build_args(&out).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let err = failure(&o);
    assert!(
        err.contains("No space left on device") && err.contains("the disk is full; nothing was written"),
        "{err}"
    );
    assert!(names(&disk.0).is_empty(), "nothing partial: {:?}", names(&disk.0));
}

#[test]
fn a_full_disk_while_writing_the_wav_is_a_clear_error_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&root.path().join("disk"), "64k");
    // Fill the disk, then free nothing: the WAV's first write fails.
    let filler = disk.0.join("filler");
    let chunk = vec![7u8; 4096];
    let mut f = std::fs::File::create(&filler).unwrap();
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let out = disk.0.join("song.wav");
    let o = song(engines(), &out, 0);
    let err = failure(&o);
    assert!(
        err.contains("No space left on device") && err.contains("the disk is full; no output was written"),
        "{err}"
    );
    assert_eq!(names(&disk.0), ["filler"], "no WAV and no temporary file");
}

#[test]
fn engines_on_a_read_only_mount_run() {
    let root = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&root.path().join("ro"), "16m");
    let ro = disk.0.join("engines");
    copy_engines(&ro);
    disk.remount_read_only();
    assert!(
        std::fs::write(ro.join("probe"), b"x").is_err(),
        "the mount is read-only"
    );
    let out = root.path().join("song.wav");
    let o = song(&ro, &out, 3);
    ok(&o, "heart-run on read-only engines");
    let reference = root.path().join("reference.wav");
    let o = song(engines(), &reference, 3);
    ok(&o, "heart-run on the writable original");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&reference).unwrap());
}

#[test]
fn two_songs_from_one_engine_folder_at_once_both_succeed() {
    let root = tempfile::tempdir().unwrap();
    let before = names(engines());
    let outs = [root.path().join("a.wav"), root.path().join("b.wav")];
    let children: Vec<Child> = outs
        .iter()
        .map(|out| spawn(&bin("heart-run"), &song_args(engines(), out, 11)))
        .collect();
    for child in children {
        let o = child.wait_with_output().unwrap();
        ok(&o, "concurrent heart-run");
    }
    let a = std::fs::read(&outs[0]).unwrap();
    assert!(hound::WavReader::open(&outs[0]).unwrap().duration() > 0);
    assert_eq!(a, std::fs::read(&outs[1]).unwrap(), "same seed, same bytes");
    assert_eq!(names(engines()), before, "nothing written into the engine folder");
}

#[test]
fn a_song_killed_or_interrupted_mid_run_leaves_no_output() {
    for signal in ["-KILL", "-INT"] {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("song.wav");
        let mut child = spawn(&bin("heart-run"), &song_args(engines(), &out, 5));
        let maps = PathBuf::from(format!("/proc/{}/maps", child.id()));
        // Generation has started once the LM tables are mapped.
        wait_for(&mut child, "the engines are loaded", || {
            std::fs::read_to_string(&maps).is_ok_and(|m| m.contains("lm_tables.safetensors"))
        });
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let o = child.wait_with_output().unwrap();
        if signal == "-INT" {
            assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
            assert!(String::from_utf8_lossy(&o.stderr).contains("interrupted; no output written"));
        } else {
            assert_eq!(o.status.code(), None, "killed by the signal");
        }
        assert!(names(root.path()).is_empty(), "{signal}: {:?}", names(root.path()));
    }
    // What a run killed while writing the WAV leaves is removed by the next run.
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("song.wav");
    std::fs::write(root.path().join(".song.wav.999999999.part"), b"RIFF").unwrap();
    ok(&song(engines(), &out, 5), "heart-run after a killed one");
    assert_eq!(names(root.path()), ["song.wav"]);
}

#[test]
fn bad_input_gets_messages_a_user_can_act_on() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("x.wav");
    let mut args = song_args(engines(), &out, 0);
    let at = args.iter().position(|a| a == "--duration").unwrap();
    args[at + 1] = "-1".into();
    let o = run("heart-run", &args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = failure(&o);
    assert!(
        err.contains("--duration -1: expected a positive number of seconds"),
        "{err}"
    );

    let missing = root.path().join("no-such-engines");
    let o = song(&missing, &out, 0);
    let err = failure(&o);
    assert!(
        err.starts_with(&format!(
            "heart-run: error: engine folder {} does not exist: build one with `heart-build --mula DIR --codec DIR --out {}`",
            missing.display(),
            missing.display()
        )),
        "{err}"
    );
    assert_eq!(
        err.matches("os error").count(),
        0,
        "no OS error, let alone twice: {err}"
    );

    // A downloaded folder whose manifest points outside it, with a matching
    // size and hash, as an attacker would write it.
    let evil = root.path().join("evil");
    copy_engines(&evil);
    std::fs::rename(evil.join("tokenizer.json"), root.path().join("secret.json")).unwrap();
    let manifest = std::fs::read_to_string(evil.join("manifest.toml")).unwrap();
    let manifest = manifest.replace("path = \"tokenizer.json\"", "path = \"../secret.json\"");
    std::fs::write(evil.join("manifest.toml"), manifest).unwrap();
    let o = song(&evil, &out, 0);
    let err = failure(&o);
    assert!(
        err.contains("manifest.toml: [[file]] path `../secret.json` has a `..` component"),
        "{err}"
    );
    assert!(!out.exists());
}

/// A copy of the shared engines in `dir`, for a test to tamper with.
fn copy_engines(dir: &Path) {
    std::fs::create_dir(dir).unwrap();
    for name in names(engines()) {
        std::fs::copy(engines().join(&name), dir.join(&name)).unwrap();
    }
}

/// Rewrites `path` in a manifest text to record the file's current size and
/// hash, as an attacker forging a folder would.
fn reseal(dir: &Path, path: &str) {
    let text = std::fs::read_to_string(dir.join("manifest.toml")).unwrap();
    let mut m: Manifest = toml::from_str(&text).unwrap();
    let entry = m.files.iter_mut().find(|f| f.path == path).unwrap();
    let bytes = std::fs::read(dir.join(path)).unwrap();
    entry.size = bytes.len() as u64;
    entry.sha256 = heart::manifest::sha256_bytes(&bytes);
    m.write(dir).unwrap();
}

#[test]
fn a_graph_whose_external_data_points_outside_the_folder_is_refused_before_onnx_runtime() {
    use prost::Message;
    let root = tempfile::tempdir().unwrap();
    let evil = root.path().join("evil");
    copy_engines(&evil);
    // The weights moved out of the folder, the graph pointed at them, the
    // manifest resealed: size and hash checks alone would pass.
    std::fs::rename(evil.join("decoder.onnx.data"), root.path().join("decoder.onnx.data")).unwrap();
    let graph = evil.join("decoder.onnx");
    let mut model = onnx_export::proto::ModelProto::decode(&*std::fs::read(&graph).unwrap()).unwrap();
    let mut redirected = 0;
    for t in &mut model.graph.as_mut().unwrap().initializer {
        for e in &mut t.external_data {
            if e.key.as_deref() == Some("location") {
                e.value = Some("../decoder.onnx.data".into());
                redirected += 1;
            }
        }
    }
    assert!(redirected > 0, "the decoder keeps its weights in external data");
    std::fs::write(&graph, model.encode_to_vec()).unwrap();
    let text = std::fs::read_to_string(evil.join("manifest.toml")).unwrap();
    let mut m: Manifest = toml::from_str(&text).unwrap();
    m.files.retain(|f| f.path != "decoder.onnx.data");
    m.write(&evil).unwrap();
    reseal(&evil, "decoder.onnx");

    let out = root.path().join("x.wav");
    let o = song(&evil, &out, 0);
    let err = failure(&o);
    assert!(
        err.contains("decoder.onnx: external data of tensor")
            && err.contains("path `../decoder.onnx.data` has a `..` component")
            && err.contains("refusing a graph that reads files outside the engine folder"),
        "{err}"
    );
    assert!(
        !err.contains("ort::"),
        "refused before ONNX Runtime saw the graph: {err}"
    );
    assert!(!out.exists());
}

#[test]
fn engine_files_the_manifest_does_not_list_are_not_opened() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("engines");
    copy_engines(&folder);
    let text = std::fs::read_to_string(folder.join("manifest.toml")).unwrap();
    let mut m: Manifest = toml::from_str(&text).unwrap();
    m.files.retain(|f| f.path != "scalar_decoder.onnx");
    m.write(&folder).unwrap();
    let out = root.path().join("x.wav");
    let o = song(&folder, &out, 0);
    let err = failure(&o);
    assert!(
        err.contains("engine file `scalar_decoder.onnx` is not listed in the manifest"),
        "{err}"
    );
}
