//! A small deterministic structural causal model over discrete variables, like pyvene's
//! `CausalModel`: variables with values, parents and functions; forward runs with
//! interventions; interchange interventions; and factual / counterfactual dataset generation
//! for training and testing alignment hypotheses.
//!
//! ```
//! use vene::causal_model::{CausalModel, Variable};
//! let digits: Vec<i64> = (0..10).collect();
//! let m = CausalModel::new(vec![
//!     Variable::input("a", digits.clone()),
//!     Variable::input("b", digits.clone()),
//!     Variable::input("c", digits.clone()),
//!     Variable::new("s", (0..19).collect(), &["a", "b"], |v| v[0] + v[1]),
//!     Variable::new("o", (0..28).collect(), &["s", "c"], |v| v[0] + v[1]),
//! ]).unwrap();
//! let base = m.setting(&[("a", 1), ("b", 2), ("c", 3)]);
//! let source = m.setting(&[("a", 7), ("b", 8), ("c", 0)]);
//! // (a + b) taken from the source: 7 + 8 + 3.
//! let out = m.run_interchange(&base, &[("s", &source)]).unwrap();
//! assert_eq!(out["o"], 18);
//! ```
//!
//! Values are `i64` (encode booleans as 0/1 and categories as indices). Randomness comes from a
//! seeded generator, so the same seed gives the same datasets everywhere.

use crate::error::Result;
use crate::{config_err, invalid};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// A value of a variable.
pub type Value = i64;

/// An assignment of values to variables (a partial one is an intervention or an input).
pub type Setting = BTreeMap<String, Value>;

/// A variable's mechanism: its value from its parents' values (in `parents` order).
pub type Mechanism = Arc<dyn Fn(&[Value]) -> Value + Send + Sync>;

/// One variable of a causal model.
#[derive(Clone)]
pub struct Variable {
    pub name: String,
    /// The values it can take (used for sampling, equivalence classes and checks).
    pub values: Vec<Value>,
    pub parents: Vec<String>,
    pub function: Mechanism,
}

impl Variable {
    pub fn new(
        name: &str,
        values: Vec<Value>,
        parents: &[&str],
        function: impl Fn(&[Value]) -> Value + Send + Sync + 'static,
    ) -> Self {
        Variable {
            name: name.to_string(),
            values,
            parents: parents.iter().map(|p| p.to_string()).collect(),
            function: Arc::new(function),
        }
    }

    /// An input variable (no parents); unless set, it takes its first value.
    pub fn input(name: &str, values: Vec<Value>) -> Self {
        let default = values.first().copied().unwrap_or(0);
        Variable::new(name, values, &[], move |_| default)
    }
}

impl std::fmt::Debug for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variable")
            .field("name", &self.name)
            .field("values", &self.values)
            .field("parents", &self.parents)
            .finish()
    }
}

/// A seeded generator (SplitMix64): the same seed gives the same samples on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// For a non-input variable: each value with the parent settings that produce it.
pub type EquivClasses = HashMap<String, BTreeMap<Value, Vec<Setting>>>;

/// One factual example: an input setting and the full setting it produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Factual {
    pub input: Setting,
    pub output: Setting,
}

/// One counterfactual example: a base input, one source input per intervened variable, the
/// base's own outcome and the outcome of the interchange intervention.
#[derive(Debug, Clone, PartialEq)]
pub struct Counterfactual {
    pub base: Setting,
    /// `(variable, source input)`: the variable takes its value under that source.
    pub sources: Vec<(String, Setting)>,
    pub base_output: Setting,
    pub counterfactual_output: Setting,
}

/// A predicate over counterfactual examples.
pub type CounterfactualFilter = Arc<dyn Fn(&Counterfactual) -> bool + Send + Sync>;

/// Options of [`CausalModel::counterfactual_dataset`].
#[derive(Clone, Default)]
pub struct CounterfactualOptions {
    /// Variables to interchange (each gets its own source); empty: pyvene's
    /// `sample_intervention` (a random non-empty subset of the intermediate variables).
    pub variables: Vec<String>,
    /// Sample each source so that its variable takes a uniformly chosen value (pyvene's
    /// `sample_input_tree_balanced`); otherwise sources are uniform random inputs.
    pub balanced_sources: bool,
    /// Keep only examples whose counterfactual outputs differ from the base outputs (so an
    /// intervention that does nothing cannot score).
    pub only_effective: bool,
    /// Keep only examples this accepts (called with the example).
    pub filter: Option<CounterfactualFilter>,
}

/// A deterministic causal model over discrete variables.
#[derive(Clone)]
pub struct CausalModel {
    /// Variables in evaluation order (by timestep, then name).
    order: Vec<String>,
    vars: HashMap<String, Variable>,
    children: HashMap<String, Vec<String>>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    timesteps: HashMap<String, usize>,
    equiv: std::sync::OnceLock<EquivClasses>,
}

impl std::fmt::Debug for CausalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalModel")
            .field("variables", &self.order)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

impl CausalModel {
    /// Builds a model. Errors: duplicate or unknown variable names, cycles, empty value sets.
    pub fn new(variables: Vec<Variable>) -> Result<Self> {
        if variables.is_empty() {
            return Err(config_err!("a causal model needs at least one variable"));
        }
        let mut vars = HashMap::new();
        for v in variables {
            if v.values.is_empty() {
                return Err(config_err!("variable '{}' has no values", v.name));
            }
            let mut seen = HashSet::new();
            if let Some(p) = v.parents.iter().find(|p| !seen.insert(p.as_str())) {
                return Err(config_err!(
                    "variable '{}' lists parent '{p}' twice",
                    v.name
                ));
            }
            if vars.contains_key(&v.name) {
                return Err(config_err!("variable '{}' is defined twice", v.name));
            }
            vars.insert(v.name.clone(), v);
        }
        let mut children: HashMap<String, Vec<String>> =
            vars.keys().map(|k| (k.clone(), Vec::new())).collect();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in &names {
            for p in &vars[*name].parents {
                let c = children.get_mut(p).ok_or_else(|| {
                    config_err!("variable '{name}' has parent '{p}', which is not a variable")
                })?;
                c.push((*name).clone());
            }
        }
        // Timesteps: inputs at 0, every other variable one after its latest parent; outputs
        // (variables nobody depends on) at the last step, as pyvene places them.
        let mut timesteps: HashMap<String, usize> = HashMap::new();
        let mut remaining: Vec<&String> = names.clone();
        while !remaining.is_empty() {
            let before = remaining.len();
            remaining.retain(|n| {
                let ps = &vars[*n].parents;
                if ps.iter().all(|p| timesteps.contains_key(p)) {
                    let t = ps.iter().map(|p| timesteps[p] + 1).max().unwrap_or(0);
                    timesteps.insert((*n).clone(), t);
                    false
                } else {
                    true
                }
            });
            if remaining.len() == before {
                let left: Vec<&str> = remaining.iter().map(|s| s.as_str()).collect();
                return Err(config_err!(
                    "the causal model has a cycle through: {}",
                    left.join(", ")
                ));
            }
        }
        let inputs: Vec<String> = names
            .iter()
            .filter(|n| vars[**n].parents.is_empty())
            .map(|n| (*n).clone())
            .collect();
        let outputs: Vec<String> = names
            .iter()
            .filter(|n| children[**n].is_empty())
            .map(|n| (*n).clone())
            .collect();
        let end = timesteps.values().copied().max().unwrap_or(0);
        for o in &outputs {
            timesteps.insert(o.clone(), end);
        }
        let mut order: Vec<String> = names.iter().map(|n| (*n).clone()).collect();
        order.sort_by(|a, b| timesteps[a].cmp(&timesteps[b]).then(a.cmp(b)));
        Ok(CausalModel {
            order,
            vars,
            children,
            inputs,
            outputs,
            timesteps,
            equiv: std::sync::OnceLock::new(),
        })
    }

    /// Variables in evaluation order.
    pub fn variables(&self) -> &[String] {
        &self.order
    }
    /// Variables without parents.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }
    /// Variables no other variable depends on (as in pyvene, an input nothing depends on is
    /// an output too).
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }
    /// Variables that are neither inputs nor outputs.
    pub fn intermediates(&self) -> Vec<String> {
        self.order
            .iter()
            .filter(|v| !self.inputs.contains(v) && !self.outputs.contains(v))
            .cloned()
            .collect()
    }
    pub fn values(&self, var: &str) -> Result<&[Value]> {
        Ok(&self.var(var)?.values)
    }
    pub fn parents(&self, var: &str) -> Result<&[String]> {
        Ok(&self.var(var)?.parents)
    }
    pub fn children(&self, var: &str) -> Result<&[String]> {
        self.var(var)?;
        Ok(&self.children[var])
    }
    pub fn timestep(&self, var: &str) -> Result<usize> {
        self.var(var)?;
        Ok(self.timesteps[var])
    }

    fn var(&self, name: &str) -> Result<&Variable> {
        self.vars.get(name).ok_or_else(|| {
            invalid!(
                "the causal model has no variable '{name}'; variables are: {}",
                self.order.join(", ")
            )
        })
    }

    /// A setting from `(variable, value)` pairs (unchecked; `run_forward` checks names).
    pub fn setting(&self, pairs: &[(&str, Value)]) -> Setting {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    /// Evaluates every variable in order; a variable named in `intervention` is fixed to that
    /// value (inputs are set this way; unset inputs use their own function). A computed value
    /// outside the variable's declared values is an error.
    pub fn run_forward(&self, intervention: &Setting) -> Result<Setting> {
        if let Some(k) = intervention.keys().find(|k| !self.vars.contains_key(*k)) {
            return Err(invalid!(
                "the setting names '{k}', which is not a variable; variables are: {}",
                self.order.join(", ")
            ));
        }
        let mut out = Setting::new();
        for name in &self.order {
            let v = &self.vars[name];
            let value = match intervention.get(name) {
                Some(x) => *x,
                None => {
                    let args: Vec<Value> = v.parents.iter().map(|p| out[p]).collect();
                    let x = (v.function)(&args);
                    if !v.values.contains(&x) {
                        return Err(invalid!(
                            "variable '{name}' computed {x} from {:?} = {args:?}, which is not one of its values",
                            v.parents
                        ));
                    }
                    x
                }
            };
            out.insert(name.clone(), value);
        }
        Ok(out)
    }

    /// pyvene's `run_interchange`: each `(variable, source input)` fixes the variable to its
    /// value under that source, then `input` runs forward with those values.
    pub fn run_interchange(
        &self,
        input: &Setting,
        sources: &[(&str, &Setting)],
    ) -> Result<Setting> {
        let mut setting = input.clone();
        for (var, src) in sources {
            self.var(var)?;
            let s = self.run_forward(src)?;
            setting.insert(var.to_string(), s[*var]);
        }
        self.run_forward(&setting)
    }

    /// A uniformly random value for every input.
    pub fn sample_input(&self, rng: &mut Rng) -> Setting {
        self.inputs
            .iter()
            .map(|i| (i.clone(), *rng.choose(&self.vars[i].values)))
            .collect()
    }

    /// A random input whose full setting `accept` accepts (up to `max_tries` draws).
    pub fn sample_input_where(
        &self,
        rng: &mut Rng,
        accept: impl Fn(&Setting) -> bool,
        max_tries: usize,
    ) -> Result<Setting> {
        for _ in 0..max_tries.max(1) {
            let input = self.sample_input(rng);
            if accept(&self.run_forward(&input)?) {
                return Ok(input);
            }
        }
        Err(invalid!(
            "no accepted input in {max_tries} draws; the condition may be impossible"
        ))
    }

    /// For each non-input variable, which parent settings produce each of its values (pyvene's
    /// `generate_equiv_classes`), computed on first use and kept.
    pub fn equiv_classes(&self) -> Result<&EquivClasses> {
        if let Some(eq) = self.equiv.get() {
            return Ok(eq);
        }
        let mut eq = EquivClasses::new();
        for name in &self.order {
            let v = &self.vars[name];
            if v.parents.is_empty() {
                continue;
            }
            let mut classes: BTreeMap<Value, Vec<Setting>> =
                v.values.iter().map(|x| (*x, Vec::new())).collect();
            // Every combination of parent values, first parent slowest (itertools.product).
            let mut combos: Vec<Vec<Value>> = vec![Vec::new()];
            for p in &v.parents {
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        self.vars[p].values.iter().map(move |x| {
                            let mut c = c.clone();
                            c.push(*x);
                            c
                        })
                    })
                    .collect();
            }
            for args in combos {
                let x = (v.function)(&args);
                let c = classes.get_mut(&x).ok_or_else(|| {
                    invalid!(
                        "variable '{name}' computed {x} from {args:?}, which is not one of its values"
                    )
                })?;
                c.push(
                    v.parents
                        .iter()
                        .cloned()
                        .zip(args.iter().copied())
                        .collect(),
                );
            }
            eq.insert(name.clone(), classes);
        }
        Ok(self.equiv.get_or_init(|| eq))
    }

    /// pyvene's `sample_input_tree_balanced`: picks a value of `var` (uniformly, or `value`),
    /// then walks down through equivalence classes choosing uniformly among the parent
    /// settings that produce it; inputs not reached are uniform.
    pub fn sample_input_tree_balanced(
        &self,
        rng: &mut Rng,
        var: Option<&str>,
        value: Option<Value>,
    ) -> Result<Setting> {
        let var = match var {
            Some(v) => v.to_string(),
            None if self.outputs.len() == 1 => self.outputs[0].clone(),
            None => {
                return Err(invalid!(
                    "the model has {} outputs; name the variable to balance",
                    self.outputs.len()
                ))
            }
        };
        let value = match value {
            Some(x) => x,
            None => *rng.choose(self.values(&var)?),
        };
        let eq = self.equiv_classes()?;
        let mut input = Setting::new();
        self.descend(eq, rng, &var, value, &mut input)?;
        for i in &self.inputs {
            if !input.contains_key(i) {
                input.insert(i.clone(), *rng.choose(&self.vars[i].values));
            }
        }
        Ok(input)
    }

    fn descend(
        &self,
        eq: &EquivClasses,
        rng: &mut Rng,
        var: &str,
        value: Value,
        input: &mut Setting,
    ) -> Result<()> {
        if self.inputs.iter().any(|i| i == var) {
            input.insert(var.to_string(), value);
            return Ok(());
        }
        let options = eq
            .get(var)
            .and_then(|c| c.get(&value))
            .filter(|o| !o.is_empty())
            .ok_or_else(|| {
                invalid!("variable '{var}' never takes the value {value} in this model")
            })?;
        let chosen = rng.choose(options).clone();
        for (p, x) in chosen {
            self.descend(eq, rng, &p, x, input)?;
        }
        Ok(())
    }

    /// pyvene's `sample_intervention`: each intermediate variable, with probability 1/2, set
    /// to a uniformly random value; never empty.
    pub fn sample_intervention(&self, rng: &mut Rng) -> Result<Setting> {
        let mids = self.intermediates();
        if mids.is_empty() {
            return Err(invalid!(
                "the model has no intermediate variables to intervene on"
            ));
        }
        loop {
            let mut s = Setting::new();
            for v in &mids {
                if rng.below(2) == 0 {
                    s.insert(v.clone(), *rng.choose(&self.vars[v].values));
                }
            }
            if !s.is_empty() {
                return Ok(s);
            }
        }
    }

    /// Variables on a path along which a change actually propagates (pyvene's
    /// `find_live_paths`), keyed by path length (2 and more).
    pub fn find_live_paths(
        &self,
        intervention: &Setting,
    ) -> Result<BTreeMap<usize, Vec<Vec<String>>>> {
        let actual = self.run_forward(intervention)?;
        let mut paths: BTreeMap<usize, Vec<Vec<String>>> = BTreeMap::new();
        let mut prev: Vec<Vec<String>> = self.order.iter().map(|v| vec![v.clone()]).collect();
        let mut step = 2;
        loop {
            let mut next = Vec::new();
            for path in &prev {
                let last = path.last().expect("paths are non-empty");
                for child in &self.children[last] {
                    let mut live = false;
                    for x in &self.vars[last].values {
                        let mut iv = intervention.clone();
                        iv.insert(last.clone(), *x);
                        if self.run_forward(&iv)?[child] != actual[child] {
                            live = true;
                            break;
                        }
                    }
                    if live {
                        let mut p = path.clone();
                        p.push(child.clone());
                        next.push(p);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            paths.insert(step, next.clone());
            prev = next;
            step += 1;
        }
        Ok(paths)
    }

    /// `size` factual examples from uniformly random inputs (those `filter` accepts).
    pub fn factual_dataset(
        &self,
        size: usize,
        rng: &mut Rng,
        filter: Option<&dyn Fn(&Setting) -> bool>,
    ) -> Result<Vec<Factual>> {
        let mut out = Vec::with_capacity(size);
        let mut tries = 0usize;
        while out.len() < size {
            tries += 1;
            if tries > 1000 * size.max(1) + 1000 {
                return Err(invalid!("the filter accepts almost no inputs"));
            }
            let input = self.sample_input(rng);
            if filter.is_some_and(|f| !f(&input)) {
                continue;
            }
            let output = self.run_forward(&input)?;
            out.push(Factual { input, output });
        }
        Ok(out)
    }

    /// `size` counterfactual examples: a uniformly random base, and for each intervened
    /// variable a source (uniform, or balanced over the variable's values); the outcome is
    /// `run_interchange(base, sources)`.
    pub fn counterfactual_dataset(
        &self,
        size: usize,
        rng: &mut Rng,
        opts: &CounterfactualOptions,
    ) -> Result<Vec<Counterfactual>> {
        for v in &opts.variables {
            self.var(v)?;
        }
        let mut out = Vec::with_capacity(size);
        let mut tries = 0usize;
        while out.len() < size {
            tries += 1;
            if tries > 1000 * size.max(1) + 1000 {
                return Err(invalid!(
                    "could not find {size} accepted counterfactual examples (got {}); the filter or only_effective rejects almost everything",
                    out.len()
                ));
            }
            let (vars, values): (Vec<String>, Vec<Option<Value>>) = if opts.variables.is_empty() {
                self.sample_intervention(rng)?
                    .into_iter()
                    .map(|(k, v)| (k, Some(v)))
                    .unzip()
            } else {
                (opts.variables.clone(), vec![None; opts.variables.len()])
            };
            let base = self.sample_input(rng);
            let mut sources = Vec::with_capacity(vars.len());
            for (v, val) in vars.iter().zip(values) {
                let src = if opts.balanced_sources || val.is_some() {
                    self.sample_input_tree_balanced(rng, Some(v), val)?
                } else {
                    self.sample_input(rng)
                };
                sources.push((v.clone(), src));
            }
            let refs: Vec<(&str, &Setting)> =
                sources.iter().map(|(v, s)| (v.as_str(), s)).collect();
            let counterfactual_output = self.run_interchange(&base, &refs)?;
            let base_output = self.run_forward(&base)?;
            let ex = Counterfactual {
                base,
                sources,
                base_output,
                counterfactual_output,
            };
            if opts.only_effective
                && self
                    .outputs
                    .iter()
                    .all(|o| ex.base_output[o] == ex.counterfactual_output[o])
            {
                continue;
            }
            if opts.filter.as_ref().is_some_and(|f| !f(&ex)) {
                continue;
            }
            out.push(ex);
        }
        Ok(out)
    }
}
