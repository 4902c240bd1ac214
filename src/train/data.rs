//! Training data for interchange interventions: examples of (base, sources, locations,
//! subspaces, counterfactual labels), their JSONL form, and batching into engine requests.

use crate::error::{Error, Result};
use crate::intervenable::Request;
use crate::invalid;
use crate::location::{Location, Units};
use crate::model::{Input, LogitPositions, Model};
use candle_core::{Device, Tensor};
use serde_json::{json, Map, Value};
use std::io::{BufRead, Write};
use std::path::Path;

/// One input of an example.
#[derive(Debug, Clone, PartialEq)]
pub enum Sequence {
    /// Token ids (models with an embedding layer).
    Tokens(Vec<u32>),
    /// Input embeddings, one row per position (models fed embeddings).
    Embeds(Vec<Vec<f32>>),
    /// One embedding vector; a batch of them is (batch, dim), as pyvene's MLP classifier takes.
    Vector(Vec<f32>),
}

impl Sequence {
    /// Number of positions.
    pub fn len(&self) -> usize {
        match self {
            Sequence::Tokens(t) => t.len(),
            Sequence::Embeds(r) => r.len(),
            Sequence::Vector(_) => 1,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn kind(&self) -> &'static str {
        match self {
            Sequence::Tokens(_) => "token ids",
            Sequence::Embeds(_) => "embedding rows",
            Sequence::Vector(_) => "a vector",
        }
    }
}

/// A target: the class (token id) expected at a position of the base's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    /// Base position whose logits are scored; `None` is the last real token (for a classifier
    /// fed vectors: its one output).
    pub position: Option<usize>,
    pub class: u32,
}

impl Label {
    pub fn new(class: u32) -> Self {
        Label {
            position: None,
            class,
        }
    }
    pub fn at(position: usize, class: u32) -> Self {
        Label {
            position: Some(position),
            class,
        }
    }
}

/// One interchange-intervention example. `labels` are what the causal hypothesis predicts the
/// intervened model outputs (the counterfactual labels).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub base: Sequence,
    /// One entry per intervention group; `None` skips the group. A single entry is used for
    /// every group, as in pyvene.
    pub sources: Vec<Option<Sequence>>,
    /// Per representation: (source units, base units) along dim 1 (positions, or heads for
    /// head units). `None`: every representation sees whole tensors.
    pub locations: Option<Vec<(Vec<usize>, Vec<usize>)>>,
    /// Per representation: the subspace ids of this example (pyvene's `subspaces`), or `None`.
    pub subspaces: Option<Vec<Option<Vec<usize>>>>,
    pub labels: Vec<Label>,
}

impl Example {
    /// An example with one source, the same units on both sides for every representation
    /// (`n_reps` of them), and one label.
    pub fn simple(
        base: Sequence,
        source: Sequence,
        units: &[usize],
        n_reps: usize,
        label: Label,
    ) -> Self {
        Example {
            base,
            sources: vec![Some(source)],
            locations: Some(vec![(units.to_vec(), units.to_vec()); n_reps]),
            subspaces: None,
            labels: vec![label],
        }
    }
}

/// A list of examples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    pub examples: Vec<Example>,
}

impl Dataset {
    pub fn new(examples: Vec<Example>) -> Self {
        Dataset { examples }
    }
    pub fn len(&self) -> usize {
        self.examples.len()
    }
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Reads one example per line (blank lines and lines starting with `#` are skipped).
    ///
    /// A line is a JSON object:
    /// ```json
    /// {"base": [12, 7, 30], "sources": [[12, 9, 30]], "locations": [[2]],
    ///  "subspaces": [[0, 1]], "labels": [{"position": 2, "class": 41}]}
    /// ```
    /// * `base`, each `sources` entry: token ids `[..]`, `{"embeds": [[..], ..]}` (one row per
    ///   position) or `{"vector": [..]}` (one embedding vector); a `sources` entry may be null.
    ///   `"source"` (one input) may replace `"sources"`.
    /// * `locations` (optional): one entry per representation, either a list of units used on
    ///   both sides or `{"source": [..], "base": [..]}`.
    /// * `subspaces` (optional): one entry per representation, a list of subspace ids or null.
    /// * `labels`: a class, a list of classes/objects, or objects `{"class", "position"?}`;
    ///   `"label": c` is short for one label at the default position.
    pub fn from_jsonl(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let f = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
        let mut examples = Vec::new();
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| Error::file(path, e))?;
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let v: Value = serde_json::from_str(t)
                .map_err(|e| Error::file(path, format!("line {}: invalid JSON: {e}", i + 1)))?;
            examples.push(
                Example::from_json(&v)
                    .map_err(|e| Error::file(path, format!("line {}: {e}", i + 1)))?,
            );
        }
        if examples.is_empty() {
            return Err(Error::file(path, "no examples"));
        }
        Ok(Dataset { examples })
    }

    /// Writes one example per line in the form `from_jsonl` reads.
    pub fn to_jsonl(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let f = std::fs::File::create(path).map_err(|e| Error::file(path, e))?;
        let mut w = std::io::BufWriter::new(f);
        for e in &self.examples {
            writeln!(w, "{}", e.to_json()).map_err(|e| Error::file(path, e))?;
        }
        w.flush().map_err(|e| Error::file(path, e))?;
        Ok(())
    }

    /// Splits off the last `fraction` of the examples (in order) as a second dataset.
    pub fn split(&self, fraction: f64) -> (Dataset, Dataset) {
        let n_tail = ((self.len() as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
        let cut = self.len() - n_tail.min(self.len());
        (
            Dataset::new(self.examples[..cut].to_vec()),
            Dataset::new(self.examples[cut..].to_vec()),
        )
    }
}

fn seq_to_json(s: &Sequence) -> Value {
    match s {
        Sequence::Tokens(t) => json!(t),
        Sequence::Embeds(r) => json!({ "embeds": r }),
        Sequence::Vector(v) => json!({ "vector": v }),
    }
}

fn seq_from_json(v: &Value, field: &str) -> std::result::Result<Sequence, String> {
    let floats = |x: &Value, f: &str| -> std::result::Result<Vec<f32>, String> {
        x.as_array()
            .and_then(|a| a.iter().map(|n| n.as_f64().map(|n| n as f32)).collect())
            .ok_or_else(|| format!("{f} must be a list of numbers"))
    };
    let s = match v {
        Value::Array(a) => Sequence::Tokens(
            a.iter()
                .map(|x| x.as_u64().filter(|&t| t <= u32::MAX as u64).map(|t| t as u32))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("{field} must be a list of token ids"))?,
        ),
        Value::Object(o) if o.len() == 1 && o.contains_key("vector") => {
            Sequence::Vector(floats(&o["vector"], &format!("{field}.vector"))?)
        }
        Value::Object(o) if o.len() == 1 && o.contains_key("embeds") => Sequence::Embeds(
            o["embeds"]
                .as_array()
                .ok_or_else(|| format!("{field}.embeds must be a list of rows"))?
                .iter()
                .map(|r| floats(r, &format!("{field}.embeds[..]")))
                .collect::<std::result::Result<_, _>>()?,
        ),
        other => {
            return Err(format!(
                "{field} must be token ids, {{\"embeds\": [[..]]}} or {{\"vector\": [..]}}, got {other}"
            ))
        }
    };
    if s.is_empty() {
        return Err(format!("{field} is empty"));
    }
    Ok(s)
}

fn units_from_json(v: &Value, field: &str) -> std::result::Result<Vec<usize>, String> {
    match v {
        Value::Number(_) => v
            .as_u64()
            .map(|u| vec![u as usize])
            .ok_or_else(|| format!("{field} must hold non-negative integers")),
        _ => v
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|u| u as usize)).collect())
            .ok_or_else(|| format!("{field} must be a list of non-negative integers")),
    }
}

impl Example {
    /// The JSON object of one JSONL line.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("base".into(), seq_to_json(&self.base));
        o.insert(
            "sources".into(),
            Value::Array(
                self.sources
                    .iter()
                    .map(|s| s.as_ref().map_or(Value::Null, seq_to_json))
                    .collect(),
            ),
        );
        if let Some(l) = &self.locations {
            o.insert(
                "locations".into(),
                Value::Array(
                    l.iter()
                        .map(|(s, b)| {
                            if s == b {
                                json!(s)
                            } else {
                                json!({"source": s, "base": b})
                            }
                        })
                        .collect(),
                ),
            );
        }
        if let Some(s) = &self.subspaces {
            o.insert("subspaces".into(), json!(s));
        }
        o.insert(
            "labels".into(),
            Value::Array(
                self.labels
                    .iter()
                    .map(|l| match l.position {
                        None => json!({"class": l.class}),
                        Some(p) => json!({"class": l.class, "position": p}),
                    })
                    .collect(),
            ),
        );
        Value::Object(o)
    }

    /// Parses the JSON object of one JSONL line (see [`Dataset::from_jsonl`]).
    pub fn from_json(v: &Value) -> Result<Self> {
        Self::parse(v).map_err(|e| invalid!("{e}"))
    }

    fn parse(v: &Value) -> std::result::Result<Self, String> {
        const KEYS: &[&str] = &[
            "base",
            "sources",
            "source",
            "locations",
            "subspaces",
            "labels",
            "label",
        ];
        let o = v
            .as_object()
            .ok_or_else(|| "an example must be a JSON object".to_string())?;
        if let Some(k) = o
            .keys()
            .find(|k| !k.starts_with('_') && !KEYS.contains(&k.as_str()))
        {
            return Err(format!(
                "unknown field '{k}'; fields are: {}",
                KEYS.join(", ")
            ));
        }
        let base = seq_from_json(o.get("base").ok_or("field 'base' is missing")?, "base")?;
        let sources = match (o.get("sources"), o.get("source")) {
            (Some(_), Some(_)) => return Err("give 'sources' or 'source', not both".into()),
            (Some(Value::Array(a)), None) if a.first().is_some_and(|x| !x.is_number()) => a
                .iter()
                .enumerate()
                .map(|(i, s)| match s {
                    Value::Null => Ok(None),
                    s => seq_from_json(s, &format!("sources[{i}]")).map(Some),
                })
                .collect::<std::result::Result<_, _>>()?,
            (Some(s), None) => vec![Some(seq_from_json(s, "sources")?)],
            (None, Some(s)) => vec![Some(seq_from_json(s, "source")?)],
            (None, None) => Vec::new(),
        };
        let locations = match o.get("locations") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .enumerate()
                    .map(|(i, l)| match l {
                        Value::Object(m) => {
                            if let Some(k) = m.keys().find(|k| *k != "source" && *k != "base") {
                                return Err(format!(
                                    "locations[{i}]: unknown field '{k}' (use \"source\" and \"base\")"
                                ));
                            }
                            let side = |k: &str| {
                                units_from_json(
                                    m.get(k).ok_or(format!("locations[{i}].{k} is missing"))?,
                                    &format!("locations[{i}].{k}"),
                                )
                            };
                            Ok((side("source")?, side("base")?))
                        }
                        other => {
                            let u = units_from_json(other, &format!("locations[{i}]"))?;
                            Ok((u.clone(), u))
                        }
                    })
                    .collect::<std::result::Result<_, _>>()?,
            ),
            Some(other) => {
                return Err(format!(
                    "locations must be a list (one entry per representation), got {other}"
                ))
            }
        };
        let subspaces = match o.get("subspaces") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .enumerate()
                    .map(|(i, s)| match s {
                        Value::Null => Ok(None),
                        s => units_from_json(s, &format!("subspaces[{i}]")).map(Some),
                    })
                    .collect::<std::result::Result<_, _>>()?,
            ),
            Some(other) => {
                return Err(format!(
                    "subspaces must be a list (one entry per representation), got {other}"
                ))
            }
        };
        let label = |x: &Value, f: &str| -> std::result::Result<Label, String> {
            let class = |c: &Value| {
                c.as_u64()
                    .filter(|&c| c <= u32::MAX as u64)
                    .map(|c| c as u32)
                    .ok_or_else(|| format!("{f}: a class must be a non-negative integer, got {c}"))
            };
            match x {
                Value::Object(m) => {
                    if let Some(k) = m.keys().find(|k| *k != "class" && *k != "position") {
                        return Err(format!(
                            "{f}: unknown field '{k}' (use \"class\" and \"position\")"
                        ));
                    }
                    let c = class(m.get("class").ok_or(format!("{f}.class is missing"))?)?;
                    let position = match m.get("position") {
                        None | Some(Value::Null) => None,
                        Some(p) => Some(
                            p.as_u64()
                                .ok_or(format!("{f}.position must be a non-negative integer"))?
                                as usize,
                        ),
                    };
                    Ok(Label { position, class: c })
                }
                c => Ok(Label::new(class(c)?)),
            }
        };
        let labels = match (o.get("labels"), o.get("label")) {
            (Some(_), Some(_)) => return Err("give 'labels' or 'label', not both".into()),
            (Some(Value::Array(a)), None) => a
                .iter()
                .enumerate()
                .map(|(i, x)| label(x, &format!("labels[{i}]")))
                .collect::<std::result::Result<Vec<_>, _>>()?,
            (Some(x), None) => vec![label(x, "labels")?],
            (None, Some(x)) => vec![label(x, "label")?],
            (None, None) => return Err("field 'labels' is missing".into()),
        };
        if labels.is_empty() {
            return Err("an example needs at least one label".into());
        }
        Ok(Example {
            base,
            sources,
            locations,
            subspaces,
            labels,
        })
    }
}

/// A batch as the engine runs it, plus where each label's logits are.
pub(crate) struct Batch {
    pub request: Request,
    /// Per label of the batch: (example, column in the logits' position axis, class).
    pub targets: Vec<(usize, usize, u32)>,
    /// Number of examples.
    pub size: usize,
}

/// Stacks inputs of one kind into one model input (right-padded token rows with a mask).
fn stack(seqs: &[&Sequence], what: &str, device: &Device) -> Result<Input> {
    let first = seqs[0];
    if let Some(s) = seqs
        .iter()
        .find(|s| std::mem::discriminant(**s) != std::mem::discriminant(first))
    {
        return Err(invalid!(
            "{what}: a batch mixes {} and {}",
            first.kind(),
            s.kind()
        ));
    }
    match first {
        Sequence::Tokens(_) => {
            let rows: Vec<Vec<u32>> = seqs
                .iter()
                .map(|s| match s {
                    Sequence::Tokens(t) => t.clone(),
                    _ => unreachable!("checked above"),
                })
                .collect();
            if rows.iter().all(|r| r.len() == rows[0].len()) {
                let (b, s) = (rows.len(), rows[0].len());
                Ok(Input::from_ids(Tensor::from_vec(
                    rows.concat(),
                    (b, s),
                    device,
                )?))
            } else {
                Input::padded(&rows, 0, false, device)
            }
        }
        Sequence::Vector(v0) => {
            let d = v0.len();
            let mut data = Vec::with_capacity(seqs.len() * d);
            for s in seqs {
                match s {
                    Sequence::Vector(v) if v.len() == d => data.extend_from_slice(v),
                    Sequence::Vector(v) => {
                        return Err(invalid!(
                            "{what}: vectors of different widths ({d} and {}) in one batch",
                            v.len()
                        ))
                    }
                    _ => unreachable!("checked above"),
                }
            }
            Ok(Input::from_embeds(Tensor::from_vec(
                data,
                (seqs.len(), d),
                device,
            )?))
        }
        Sequence::Embeds(r0) => {
            let (s0, d) = (r0.len(), r0[0].len());
            let mut data = Vec::with_capacity(seqs.len() * s0 * d);
            for s in seqs {
                let Sequence::Embeds(rows) = s else {
                    unreachable!("checked above")
                };
                if rows.len() != s0 || rows.iter().any(|r| r.len() != d) {
                    return Err(invalid!(
                        "{what}: embedding inputs in one batch must all be {s0} x {d}"
                    ));
                }
                rows.iter().for_each(|r| data.extend_from_slice(r));
            }
            Ok(Input::from_embeds(Tensor::from_vec(
                data,
                (seqs.len(), s0, d),
                device,
            )?))
        }
    }
}

/// Builds the engine request for a batch of examples. `n_reps` and `n_groups` come from the
/// intervenable model.
pub(crate) fn collate(
    examples: &[&Example],
    model: &Model,
    n_reps: usize,
    n_groups: usize,
) -> Result<Batch> {
    let dev = model.device();
    let b = examples.len();
    if b == 0 {
        return Err(invalid!("an empty batch"));
    }
    let bases: Vec<&Sequence> = examples.iter().map(|e| &e.base).collect();
    let base = stack(&bases, "base", dev)?;
    // Sources: the same groups present in every example.
    let n_src = examples[0].sources.len();
    if n_src > 1 && n_src != n_groups {
        return Err(invalid!(
            "examples have {n_src} sources, but the config has {n_groups} groups (give one source per group, or one for all)"
        ));
    }
    let mut sources = Vec::with_capacity(n_src);
    for g in 0..n_src {
        let present: Vec<Option<&Sequence>> = examples
            .iter()
            .map(|e| e.sources.get(g).and_then(|s| s.as_ref()))
            .collect();
        if examples.iter().any(|e| e.sources.len() != n_src) {
            return Err(invalid!(
                "examples of one batch have different numbers of sources"
            ));
        }
        match present.iter().filter(|s| s.is_some()).count() {
            0 => sources.push(None),
            k if k == b => {
                let seqs: Vec<&Sequence> = present.into_iter().flatten().collect();
                sources.push(Some(stack(&seqs, &format!("sources[{g}]"), dev)?));
            }
            _ => {
                return Err(invalid!(
                    "sources[{g}] is null in some examples of a batch and given in others; put such examples in separate datasets"
                ))
            }
        }
    }
    // Locations: per representation, per example.
    let locations = match examples.iter().filter(|e| e.locations.is_some()).count() {
        0 => None,
        k if k == b => {
            let mut locs = Vec::with_capacity(n_reps);
            for r in 0..n_reps {
                let mut src = Vec::with_capacity(b);
                let mut dst = Vec::with_capacity(b);
                for (i, e) in examples.iter().enumerate() {
                    let l = e.locations.as_ref().expect("counted above");
                    if l.len() != n_reps {
                        return Err(invalid!(
                            "example {i} of the batch has {} locations, but the config has {n_reps} representations",
                            l.len()
                        ));
                    }
                    src.push(l[r].0.clone());
                    dst.push(l[r].1.clone());
                }
                locs.push(Location {
                    source: Units::Index(src),
                    base: Units::Index(dst),
                });
            }
            Some(locs)
        }
        _ => {
            return Err(invalid!(
                "some examples of a batch have locations and others do not"
            ))
        }
    };
    // Subspaces: per representation, per example rows.
    let subspaces = match examples.iter().filter(|e| e.subspaces.is_some()).count() {
        0 => vec![None; n_reps],
        k if k == b => {
            let mut out = Vec::with_capacity(n_reps);
            for r in 0..n_reps {
                let mut rows = Vec::with_capacity(b);
                let mut given = 0;
                for (i, e) in examples.iter().enumerate() {
                    let s = e.subspaces.as_ref().expect("counted above");
                    if s.len() != n_reps {
                        return Err(invalid!(
                            "example {i} of the batch has {} subspace entries, but the config has {n_reps} representations",
                            s.len()
                        ));
                    }
                    if let Some(row) = &s[r] {
                        given += 1;
                        rows.push(row.clone());
                    }
                }
                out.push(match given {
                    0 => None,
                    g if g == b => Some(rows),
                    _ => {
                        return Err(invalid!(
                            "subspaces[{r}] is null in some examples of a batch and given in others"
                        ))
                    }
                });
            }
            out
        }
        _ => {
            return Err(invalid!(
                "some examples of a batch have subspaces and others do not"
            ))
        }
    };
    // Labels: logits only where they are scored.
    let lens: Vec<usize> = examples.iter().map(|e| e.base.len()).collect();
    let mut positions: Vec<usize> = Vec::new();
    let mut any_default = false;
    for (i, e) in examples.iter().enumerate() {
        if e.labels.is_empty() {
            return Err(invalid!("example {i} of the batch has no label"));
        }
        for l in &e.labels {
            match l.position {
                None => any_default = true,
                Some(p) if p >= lens[i] => {
                    return Err(invalid!(
                        "example {i}: label position {p} is past its base input ({} positions)",
                        lens[i]
                    ))
                }
                Some(p) => positions.push(p),
            }
        }
    }
    let (logits, targets) = if positions.is_empty() {
        // Every label at the default position: the last real token of each row.
        let mut t = Vec::new();
        for (i, e) in examples.iter().enumerate() {
            for l in &e.labels {
                t.push((i, 0, l.class));
            }
        }
        (LogitPositions::Last, t)
    } else {
        if any_default {
            // Mixed: the default position is each row's last token, written out.
            for &n in &lens {
                positions.push(n - 1);
            }
        }
        positions.sort_unstable();
        positions.dedup();
        let col = |p: usize| positions.binary_search(&p).expect("collected above");
        let mut t = Vec::new();
        for (i, e) in examples.iter().enumerate() {
            for l in &e.labels {
                t.push((i, col(l.position.unwrap_or(lens[i] - 1)), l.class));
            }
        }
        (LogitPositions::At(positions), t)
    };
    Ok(Batch {
        request: Request {
            base: Some(base),
            sources,
            locations,
            subspaces,
            logits,
            ..Default::default()
        },
        targets,
        size: b,
    })
}
