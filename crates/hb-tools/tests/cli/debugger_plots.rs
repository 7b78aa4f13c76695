//! hb-debugger's plots end to end on resnet_tiny's calibrated model (made
//! once by hb-calib): plot-distribution, get-channelwise-data-distribution,
//! plot-acc-error, the sensitivity chart and runall. Every SVG must be
//! well-formed XML (checked by the small parser below) and hold data
//! elements; index.html must link every file of the save folder.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use crate::common::fixtures;
use crate::debugger_common::{calib_dir, calibrate_max, dbg};

fn tmp() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("hb-debugger-plot-tests")
}

/// Calibrates fixture `name` (max, few samples) once; returns the calibrated model.
fn calibrated(name: &str) -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| calibrate_max(&fixtures(), name, &tmp()))
        .clone()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fresh(name: &str) -> PathBuf {
    let d = tmp().join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// One element of a parsed document: name and attributes.
#[derive(Debug)]
struct Elem {
    name: String,
    attrs: Vec<(String, String)>,
}

impl Elem {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
}

fn check_entities(s: &str) -> Result<(), String> {
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        let tail = &rest[i + 1..];
        let end = tail.find(';').ok_or("'&' without ';'")?;
        let ent = &tail[..end];
        let known = matches!(ent, "amp" | "lt" | "gt" | "quot" | "apos")
            || (ent.starts_with('#') && ent.len() > 1);
        if !known {
            return Err(format!("unknown entity &{ent};"));
        }
        rest = &tail[end + 1..];
    }
    if s.contains('<') {
        return Err("'<' in text or attribute".into());
    }
    Ok(())
}

fn is_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        && !n.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
}

/// A small XML well-formedness check: one root, matched tags, quoted
/// unique attributes, known entities. Returns every element.
fn parse_xml(doc: &str) -> Result<Vec<Elem>, String> {
    let mut out = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = doc;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            if !stack.is_empty() || !rest.trim().is_empty() {
                return Err(format!("trailing text or unclosed {stack:?}"));
            }
            break;
        };
        let text = &rest[..lt];
        if stack.is_empty() && !text.trim().is_empty() {
            return Err(format!("text outside the root: {text:?}"));
        }
        check_entities(text)?;
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<?") {
            let e = r.find("?>").ok_or("unclosed <?")?;
            rest = &r[e + 2..];
            continue;
        }
        if let Some(r) = rest.strip_prefix("<!--") {
            let e = r.find("-->").ok_or("unclosed comment")?;
            rest = &r[e + 3..];
            continue;
        }
        if rest.starts_with("<!") {
            let e = rest.find('>').ok_or("unclosed <!")?;
            rest = &rest[e + 1..];
            continue;
        }
        let gt = rest.find('>').ok_or("unclosed tag")?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("</{name}> without opening"))?;
            if open != name.trim() {
                return Err(format!("<{open}> closed by </{name}>"));
            }
            continue;
        }
        let (tag, selfclose) = match tag.strip_suffix('/') {
            Some(t) => (t, true),
            None => (tag, false),
        };
        let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
        let name = &tag[..name_end];
        if !is_name(name) {
            return Err(format!("bad element name {name:?}"));
        }
        let mut attrs: Vec<(String, String)> = Vec::new();
        let mut a = tag[name_end..].trim_start();
        while !a.is_empty() {
            let eq = a
                .find('=')
                .ok_or(format!("attribute without value in <{name}>"))?;
            let key = a[..eq].trim();
            if !is_name(key) {
                return Err(format!("bad attribute name {key:?}"));
            }
            let v = a[eq + 1..].trim_start();
            let q = v.chars().next().ok_or("missing attribute value")?;
            if q != '"' && q != '\'' {
                return Err(format!("unquoted attribute {key}"));
            }
            let end = v[1..].find(q).ok_or("unterminated attribute")?;
            let val = &v[1..1 + end];
            check_entities(val)?;
            if attrs.iter().any(|(k, _)| k == key) {
                return Err(format!("duplicate attribute {key}"));
            }
            attrs.push((key.to_string(), val.to_string()));
            a = v[end + 2..].trim_start();
        }
        if stack.is_empty() {
            roots += 1;
            if roots > 1 {
                return Err("more than one root".into());
            }
        }
        out.push(Elem {
            name: name.to_string(),
            attrs,
        });
        if !selfclose {
            stack.push(name.to_string());
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed {stack:?}"));
    }
    if roots != 1 {
        return Err("no root element".into());
    }
    Ok(out)
}

/// Parses an SVG file; returns its elements (root must be `svg`).
fn svg_elems(p: &Path) -> Vec<Elem> {
    let text = std::fs::read_to_string(p).unwrap();
    let e = parse_xml(&text).unwrap_or_else(|e| panic!("{}: not well-formed: {e}", p.display()));
    assert_eq!(e[0].name, "svg", "{}", p.display());
    e
}

fn count(e: &[Elem], name: &str, class: &str) -> usize {
    e.iter()
        .filter(|x| x.name == name && x.attr("class") == Some(class))
        .count()
}

fn files(dir: &Path, prefix: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with(prefix) && n.ends_with(ext)
        })
        .collect();
    v.sort();
    v
}

/// index.html is well-formed enough (tags balance as XML would, apart
/// from void elements) and links every other file of `dir`.
fn check_index(dir: &Path) {
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let xmlish = html
        .replace("<!DOCTYPE html>", "")
        .replace("<meta charset=\"utf-8\">", "<meta charset=\"utf-8\"/>");
    let xmlish = close_void_tags(&xmlish);
    parse_xml(&xmlish).unwrap_or_else(|e| panic!("index.html: {e}"));
    let links: BTreeSet<String> = html
        .split("href=\"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].to_string())
        .collect();
    for f in std::fs::read_dir(dir).unwrap() {
        let n = f.unwrap().file_name().into_string().unwrap();
        if n != "index.html" {
            assert!(
                links.contains(&n),
                "index.html does not link {n}: {links:?}"
            );
        }
    }
    for l in &links {
        assert!(dir.join(l).is_file(), "index.html links a missing file {l}");
    }
}

/// Closes `<img ...>` tags so the HTML parses as XML.
fn close_void_tags(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("<img ") {
        out.push_str(&rest[..i]);
        let e = rest[i..].find('>').unwrap() + i;
        out.push_str(&rest[i..e]);
        out.push_str("/>");
        rest = &rest[e + 1..];
    }
    out.push_str(rest);
    out
}

/// The `n` most sensitive node names of resnet_tiny (2 samples).
fn top_nodes(n: usize) -> Vec<String> {
    let out = dbg(&[
        "get-sensitivity-of-nodes",
        s(&calibrated("resnet_tiny")),
        s(&calib_dir("resnet_tiny")),
        "-d",
        "2",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .take(n)
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn xml_checker_rejects_malformed() {
    assert!(parse_xml("<svg><rect/></svg>").is_ok());
    for bad in [
        "<svg><rect></svg>",
        "<svg a=1/>",
        "<svg>&nbsp;</svg>",
        "<svg/><svg/>",
        "<svg a=\"1\" a=\"2\"/>",
        "<svg>",
    ] {
        assert!(parse_xml(bad).is_err(), "{bad}");
    }
}

#[test]
fn sensitivity_chart_and_index() {
    let dir = fresh("sens");
    ok(&dbg(&[
        "get-sensitivity-of-nodes",
        s(&calibrated("resnet_tiny")),
        s(&calib_dir("resnet_tiny")),
        "-d",
        "2",
        "-s",
        s(&dir),
    ]));
    let e = svg_elems(&dir.join("sensitivity_node.svg"));
    let rows = std::fs::read_to_string(dir.join("sensitivity_node.json")).unwrap();
    let n = serde_json::from_str::<Value>(&rows).unwrap()["rows"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(count(&e, "rect", "bar"), n.min(60));
    check_index(&dir);
}

#[test]
fn distribution_plots() {
    let dir = fresh("dist");
    let top = top_nodes(2);
    let out = ok(&dbg(&[
        "plot-distribution",
        s(&calibrated("resnet_tiny")),
        s(&calib_dir("resnet_tiny")),
        "-d",
        "2",
        "-n",
        &top.join(","),
        "-s",
        s(&dir),
    ]));
    let svgs = files(&dir, "distribution_", ".svg");
    assert!(svgs.len() >= 2, "{out}");
    for p in &svgs {
        let e = svg_elems(p);
        assert_eq!(count(&e, "path", "hist"), 2, "{}", p.display());
        assert!(count(&e, "line", "threshold") >= 1, "{}", p.display());
        // int8: the 256-level grid is drawn.
        assert!(count(&e, "line", "grid") > 100, "{}", p.display());
    }
    check_index(&dir);
}

#[test]
fn channelwise_box_plots() {
    let dir = fresh("chan");
    let top = top_nodes(2);
    ok(&dbg(&[
        "get-channelwise-data-distribution",
        s(&calibrated("resnet_tiny")),
        s(&calib_dir("resnet_tiny")),
        "-d",
        "2",
        "-n",
        &top.join(","),
        "-a",
        "1",
        "-s",
        s(&dir),
    ]));
    let svgs = files(&dir, "channelwise_", "_axis1.svg");
    assert!(svgs.len() >= 2);
    for p in &svgs {
        let e = svg_elems(p);
        let boxes = count(&e, "rect", "box");
        assert!(boxes > 1, "{}: {boxes} boxes", p.display());
        assert_eq!(boxes, count(&e, "line", "median"));
        assert!(count(&e, "line", "threshold") >= 1, "{}", p.display());
    }
    check_index(&dir);
}

#[test]
fn acc_error_curves() {
    let dir = fresh("acc");
    let top = top_nodes(3);
    let m = calibrated("resnet_tiny");
    let data = calib_dir("resnet_tiny");
    let q = format!("{},{}+{}", top[0], top[1], top[2]);
    ok(&dbg(&[
        "plot-acc-error",
        s(&m),
        s(&data),
        "-d",
        "2",
        "-q",
        &q,
        "-a",
        "-s",
        s(&dir),
    ]));
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("acc_error_cosine-similarity.json")).unwrap(),
    )
    .unwrap();
    let curves = v["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 3, "all + one per -q entry");
    assert_eq!(v["samples"], 2);
    let layers = v["layers"].as_array().unwrap().len();
    let all: Vec<f64> = curves[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_f64())
        .collect();
    assert!(all.len() > layers / 2, "{all:?}");
    assert!(all.iter().all(|c| *c <= 1.0 + 1e-6 && *c > 0.0), "{all:?}");
    assert!(
        all.iter().any(|c| *c < 1.0),
        "quantizing everything changes something"
    );
    // Only one node quantized: the first layer (reading only the model
    // input) is exact when that node comes later.
    let only: Vec<f64> = curves[1]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::NAN))
        .collect();
    let pos = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .position(|l| l == &Value::String(top[0].clone()))
        .unwrap();
    if pos > 0 {
        assert!((only[0] - 1.0).abs() < 1e-6, "{only:?}");
    }
    assert!(only.iter().any(|c| *c < 1.0), "{only:?}");
    let e = svg_elems(&dir.join("acc_error_cosine-similarity.svg"));
    assert_eq!(count(&e, "path", "curve"), 3);
    assert!(count(&e, "circle", "point") > 3);
    // All but the node: a curve per --nq entry; mse metric.
    let dir2 = fresh("acc-nq");
    ok(&dbg(&[
        "plot-acc-error",
        s(&m),
        s(&data),
        "-d",
        "1",
        "--nq",
        &top[0],
        "-m",
        "mse",
        "-s",
        s(&dir2),
    ]));
    let e = svg_elems(&dir2.join("acc_error_mse.svg"));
    assert_eq!(count(&e, "path", "curve"), 2);
    check_index(&dir);
    check_index(&dir2);
}

#[test]
fn runall_writes_everything() {
    let dir = fresh("runall");
    ok(&dbg(&[
        "runall",
        s(&calibrated("resnet_tiny")),
        s(&calib_dir("resnet_tiny")),
        "-d",
        "2",
        "-s",
        s(&dir),
    ]));
    for f in [
        "sensitivity_node.txt",
        "sensitivity_node.json",
        "sensitivity_node.svg",
        "acc_error_cosine-similarity.svg",
        "acc_error_cosine-similarity.json",
        "index.html",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(files(&dir, "distribution_", ".svg").len() >= 5);
    assert!(files(&dir, "channelwise_", ".svg").len() >= 5);
    let all = files(&dir, "", ".svg");
    for p in &all {
        let e = svg_elems(p);
        let data = e
            .iter()
            .filter(|x| matches!(x.attr("class"), Some("hist" | "bar" | "box" | "curve")))
            .count();
        assert!(data > 0, "{}: no data elements", p.display());
    }
    check_index(&dir);
}

#[test]
fn bad_input_is_one_line_exit_2() {
    let m = calibrated("resnet_tiny");
    let data = calib_dir("resnet_tiny");
    let dir = fresh("bad");
    let top = top_nodes(1).remove(0);
    for args in [
        vec![
            "plot-distribution",
            s(&m),
            s(&data),
            "-n",
            "no_such_node",
            "-s",
            s(&dir),
        ],
        vec![
            "get-channelwise-data-distribution",
            s(&m),
            s(&data),
            "-n",
            top.as_str(),
            "-a",
            "7",
            "-s",
            s(&dir),
        ],
        vec![
            "plot-acc-error",
            s(&m),
            s(&data),
            "-q",
            "no_such_node",
            "-s",
            s(&dir),
        ],
        vec![
            "plot-acc-error",
            s(&m),
            s(&data),
            "-m",
            "nope",
            "-s",
            s(&dir),
        ],
    ] {
        let out = dbg(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!dir.join("index.html").exists(), "{args:?} wrote something");
    }
}
