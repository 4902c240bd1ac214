//! `IntervenableModel`: a model plus a compiled intervention config. It runs the source
//! inputs with getters, then the base input with setters, as pyvene does.

use crate::config::{groups, representation_keys, IntervenableConfig, Mode, RepresentationConfig};
use crate::error::Result;
use crate::generate::{call_logits, decode, GenerateOptions};
use crate::intervention::{self, Intervention, Spec};
use crate::invalid;
use crate::location::{gather, scatter, Location, Unit, Units};
use crate::model::{
    ForwardOptions, ForwardOutput, Hooks, Input, KvCache, LogitPositions, Model, NoHooks,
};
use crate::site::{Component, Site};
use crate::subspace::{self, Dims};
use crate::time_steps::{self, StepReads};
use candle_core::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

/// One compiled representation.
pub struct Representation {
    pub key: String,
    pub site: Site,
    pub unit: Unit,
    pub group: usize,
    /// Index into the intervention objects; linked representations share one.
    pub intervention: usize,
    pub constant_source: Option<Tensor>,
    pub interchange_dim: Option<usize>,
    pub partition: Option<Vec<Vec<usize>>>,
    pub keep_last_dim: bool,
    pub embed_dim: usize,
}

pub struct IntervenableModel {
    model: Arc<Model>,
    config: IntervenableConfig,
    reps: Vec<Representation>,
    n_groups: usize,
    interventions: Vec<Box<dyn Intervention>>,
}

/// One forward request, in the structured form (the JSON forms parse into it).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub base: Option<Input>,
    /// One entry per group; `None` skips the group. A single entry is used for every group.
    pub sources: Vec<Option<Input>>,
    /// One `Location` per representation; `None` means whole tensors everywhere.
    pub locations: Option<Vec<Location>>,
    /// Per representation: per-example subspace rows, or `None`.
    pub subspaces: Vec<Option<Vec<Vec<usize>>>>,
    /// Per representation: a ready-made source activation (no source run for it).
    pub source_representations: Option<Vec<Option<Tensor>>>,
    pub output_original: bool,
    pub logits: LogitPositions,
}

/// Result of `generate`: prompt + new ids (batch, len) as i64, as Hugging Face returns them.
#[derive(Debug, Clone)]
pub struct Generation {
    pub ids: Tensor,
    /// The same generation without interventions, when `output_original` was asked.
    pub original_ids: Option<Tensor>,
    pub collected: Vec<Tensor>,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub original: Option<ForwardOutput>,
    pub intervened: ForwardOutput,
    /// Collect results in representation order (pyvene's flat list).
    pub collected: Vec<Tensor>,
}

impl IntervenableModel {
    pub fn new(model: Arc<Model>, config: IntervenableConfig) -> Result<Self> {
        Self::with_tensors(model, config, &HashMap::new())
    }

    /// Like `new`, resolving a `source_representation` given as a tensor name against `tensors`.
    pub fn with_tensors(
        model: Arc<Model>,
        config: IntervenableConfig,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Self> {
        let keys = representation_keys(&config.representations);
        let (group_of, n_groups) = groups(&config.representations)?;
        let mut reps = Vec::new();
        let mut interventions: Vec<Box<dyn Intervention>> = Vec::new();
        let mut links: Vec<(serde_json::Value, usize)> = Vec::new();
        for (i, r) in config.representations.iter().enumerate() {
            let at = |e: crate::Error| invalid!("config.representations[{i}] ({}): {e}", keys[i]);
            let rep = compile(&model, r, &keys[i], group_of[i], tensors).map_err(at)?;
            let linked = r
                .intervention_link_key
                .as_ref()
                .and_then(|k| links.iter().find(|(l, _)| l == k).map(|(_, idx)| *idx));
            let idx = match linked {
                Some(idx) => idx,
                None => {
                    let spec = Spec {
                        rep: r,
                        embed_dim: rep.embed_dim,
                        device: model.device(),
                    };
                    interventions.push(intervention::build(&spec).map_err(at)?);
                    if let Some(k) = &r.intervention_link_key {
                        links.push((k.clone(), interventions.len() - 1));
                    }
                    interventions.len() - 1
                }
            };
            reps.push(Representation {
                intervention: idx,
                ..rep
            });
        }
        Ok(IntervenableModel {
            model,
            config,
            reps,
            n_groups,
            interventions,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
    pub fn config(&self) -> &IntervenableConfig {
        &self.config
    }
    pub fn representations(&self) -> &[Representation] {
        &self.reps
    }
    pub fn n_groups(&self) -> usize {
        self.n_groups
    }
    pub fn intervention(&self, rep: usize) -> &dyn Intervention {
        self.interventions[self.reps[rep].intervention].as_ref()
    }
    pub fn intervention_mut(&mut self, rep: usize) -> &mut dyn Intervention {
        let i = self.reps[rep].intervention;
        self.interventions[i].as_mut()
    }

    /// Loads a pyvene `state_dict()` into representation `rep`'s intervention (shared with the
    /// representations linked to it); its `source_representation` becomes their constant source.
    pub fn load_state(&mut self, rep: usize, state: &HashMap<String, Tensor>) -> Result<()> {
        let r = self.reps.get(rep).ok_or_else(|| {
            invalid!(
                "representation {rep} is out of range: the config has {}",
                self.reps.len()
            )
        })?;
        let units = self.config.representations[rep].max_number_of_units.max(1);
        let mut widths = vec![r.embed_dim / units, r.embed_dim];
        widths.dedup();
        let (rest, constant) = intervention::state_dict::split_constant(
            self.intervention(rep).type_name(),
            state,
            &widths,
        )?;
        self.intervention_mut(rep).load_state(&rest)?;
        if let Some(c) = constant {
            let shared = self.reps[rep].intervention;
            for r in self.reps.iter_mut().filter(|r| r.intervention == shared) {
                r.constant_source = Some(c.clone());
            }
        }
        Ok(())
    }

    /// pyvene's `state_dict()` of representation `rep`'s intervention: its own state, and
    /// `source_representation` when the representation has a constant source.
    pub fn state(&self, rep: usize) -> Vec<(String, Tensor)> {
        let mut s = self.intervention(rep).state();
        if let Some(c) = &self.reps[rep].constant_source {
            s.push((
                intervention::state_dict::SOURCE_REPRESENTATION.to_string(),
                c.clone(),
            ));
        }
        s
    }

    /// Runs sources and base with the interventions in place.
    pub fn forward(&self, req: &Request) -> Result<Outcome> {
        self.forward_with(req, false)
    }

    /// Like `forward`, but the base runs with ops that all have a backward pass
    /// (`ForwardOptions::differentiable`), so gradients reach trainable interventions.
    pub fn forward_differentiable(&self, req: &Request) -> Result<Outcome> {
        self.forward_with(req, true)
    }

    fn forward_with(&self, req: &Request, differentiable: bool) -> Result<Outcome> {
        let base = req
            .base
            .as_ref()
            .ok_or_else(|| invalid!("the request has no base input"))?;
        let opts = ForwardOptions {
            logits: req.logits.clone(),
            differentiable,
            ..Default::default()
        };
        if !differentiable {
            if let Some((original, intervened, mut plan)) =
                self.forward_sharing(req, base, &opts)?
            {
                return Ok(Outcome {
                    original,
                    intervened,
                    collected: plan.take_collected()?,
                });
            }
        }
        let original = if req.output_original {
            Some(self.model.forward(base, &mut NoHooks, &opts)?)
        } else {
            None
        };
        let mut plan = self.prepare(req, req.locations.clone())?;
        let intervened = self.model.forward(base, &mut plan, &opts)?;
        Ok(Outcome {
            original,
            intervened,
            collected: plan.take_collected()?,
        })
    }

    /// Generates from the base with the interventions in place, gated as pyvene does: by
    /// default every decoding step is intervened at the given positions of that step's input
    /// (with no locations: position 0, the new token) and the prompt is not; with
    /// `intervene_on_prompt` only the prompt is. Setters with whole-tensor locations act on
    /// every call. Sources run once, before decoding.
    pub fn generate(
        &self,
        req: &Request,
        opts: &GenerateOptions,
        intervene_on_prompt: bool,
    ) -> Result<Generation> {
        let base = req
            .base
            .as_ref()
            .ok_or_else(|| invalid!("the request has no base input"))?;
        let (batch, _) = base.batch_seq()?;
        let locations = match (&req.locations, intervene_on_prompt) {
            (None, false) => Some(vec![
                Location {
                    source: Units::Whole,
                    base: Units::same(&[0], batch),
                };
                self.reps.len()
            ]),
            (l, _) => l.clone(),
        };
        let original = if req.output_original {
            Some(decode(
                self.model(),
                base,
                opts,
                |inp, cache, call| self.step(inp, cache, call, &mut NoHooks),
                |_| Ok(()),
            )?)
        } else {
            None
        };
        let mut plan = self.prepare(req, locations)?;
        for s in plan.setters.iter_mut() {
            s.gated = s.units != Units::Whole;
        }
        plan.on_prompt = intervene_on_prompt;
        let ids = decode(
            self.model(),
            base,
            opts,
            |inp, cache, call| {
                plan.call = call;
                plan.hot.clear();
                self.step(inp, cache, call, &mut plan)
            },
            |_| Ok(()),
        )?;
        Ok(Generation {
            ids,
            original_ids: original,
            collected: plan.take_collected()?,
        })
    }

    fn step(
        &self,
        input: &Input,
        cache: &mut KvCache,
        call: usize,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        let out = self
            .model
            .forward_cached(input, hooks, &call_logits(call), cache)?;
        out.logits
            .ok_or_else(|| invalid!("this model produces no token logits"))
    }

    /// Runs the sources and returns the base run's hooks.
    fn prepare(&self, req: &Request, locations: Option<Vec<Location>>) -> Result<Plan<'_>> {
        let n = self.reps.len();
        let locations = match locations {
            Some(l) if l.len() != n => {
                return Err(invalid!(
                    "unit_locations has {} entries for {n} interventions",
                    l.len()
                ))
            }
            Some(l) => l,
            None => vec![Location::whole(); n],
        };
        let dims = self.resolve_subspaces(&req.subspaces)?;
        let sources = self.broadcast_sources(&req.sources)?;
        self.check_time_steps(req, &sources, &locations)?;
        let given = match &req.source_representations {
            None => vec![None; n],
            Some(v) if v.len() == n => v.clone(),
            Some(v) => {
                return Err(invalid!(
                    "source_representations has {} entries for {n} interventions",
                    v.len()
                ))
            }
        };
        match self.config.mode {
            Mode::Parallel => {
                let acts = self.run_sources_parallel(&sources, &locations, &given)?;
                self.setters(&acts, &locations, &dims, &sources, |_| true)
            }
            Mode::Serial => self.run_sources_serial(&sources, &locations, &dims, &given),
        }
    }

    /// The source run and the base run as one batch (source rows after the base's) up to the
    /// deepest getter, where the source rows leave: the weights of those layers are read once
    /// for both, which is most of the cost at small batches. Only in parallel mode, with one
    /// source that every getter reads, where each getter comes no later in the forward than
    /// the setter it feeds; `None` where that does not hold or the model cannot share a batch
    /// (then the runs go one after the other). Same results: rows never mix in a forward.
    fn forward_sharing(
        &self,
        req: &Request,
        base: &Input,
        opts: &ForwardOptions,
    ) -> Result<Option<(Option<ForwardOutput>, ForwardOutput, Plan<'_>)>> {
        let n = self.reps.len();
        if self.config.mode != Mode::Parallel
            || n == 0
            || self.reps.iter().any(|r| r.unit == Unit::Time)
        {
            return Ok(None);
        }
        let locations = match &req.locations {
            Some(l) if l.len() != n => return Ok(None),
            Some(l) => l.clone(),
            None => vec![Location::whole(); n],
        };
        let given = match &req.source_representations {
            None => vec![None; n],
            Some(v) if v.len() == n => v.clone(),
            Some(_) => return Ok(None),
        };
        let sources = self.broadcast_sources(&req.sources)?;
        let members: Vec<usize> = (0..n)
            .filter(|&i| given[i].is_none() && self.needs_run(i))
            .collect();
        let Some(&first) = members.first() else {
            return Ok(None);
        };
        let group = self.reps[first].group;
        let Some(Some(src)) = sources.get(group) else {
            return Ok(None);
        };
        // A getter reads the setter's own site or that module's input, which comes first.
        let feeds_in_order = |i: usize| {
            use Component::*;
            let (get, set) = (self.source_site(i), self.reps[i].site);
            get == set
                || (get.layer == set.layer
                    && matches!(
                        (get.component, set.component),
                        (BlockInput, BlockOutput)
                            | (MlpInput, MlpOutput)
                            | (AttentionInput, AttentionOutput)
                    ))
        };
        if members
            .iter()
            .any(|&i| self.reps[i].group != group || !feeds_in_order(i))
        {
            return Ok(None);
        }
        let dims = self.resolve_subspaces(&req.subspaces)?;
        // Setters are built with a stand-in source; the getter at their site fills it in.
        let mut acts = given.clone();
        let stand_in = Tensor::zeros(1, candle_core::DType::F32, self.model.device())?;
        for &i in &members {
            acts[i] = Some(stand_in.clone());
        }
        let mut plan = self.setters(&acts, &locations, &dims, &sources, |_| true)?;
        for s in plan.setters.iter_mut().filter(|s| members.contains(&s.rep)) {
            s.source = None;
        }
        for &i in &members {
            plan.getters.push(Getter {
                rep: i,
                site: self.source_site(i),
                units: locations[i].source.clone(),
            });
        }
        let until = plan.getters.iter().map(|g| g.site.layer).max().unwrap_or(0);
        let base_rows = base.batch_seq()?.0;
        let mut hooks = Sharing {
            plan,
            base_rows,
            pending: members,
        };
        // The unintervened run, when asked, shares the batch the same way, so that outputs the
        // interventions cannot reach (earlier positions) stay bit-identical to it.
        let original = match req.output_original {
            false => None,
            true => match self
                .model
                .forward_sharing(base, src, until, &mut NoHooks, opts)
            {
                None => return Ok(None),
                Some(o) => Some(o?),
            },
        };
        let Some(out) = self
            .model
            .forward_sharing(base, src, until, &mut hooks, opts)
        else {
            return Ok(None);
        };
        let out = out?;
        let plan = hooks.plan;
        for g in &plan.getters {
            if !plan.got.contains_key(&g.rep) {
                return Err(invalid!(
                    "the source run never reached {} for {}",
                    g.site,
                    self.reps[g.rep].key
                ));
            }
        }
        Ok(Some((original, out, plan)))
    }

    /// Unit "t": every selected step must lie inside the sequence it selects from.
    fn check_time_steps(
        &self,
        req: &Request,
        sources: &[Option<Input>],
        locations: &[Location],
    ) -> Result<()> {
        for (i, r) in self.reps.iter().enumerate() {
            if r.unit != Unit::Time {
                continue;
            }
            let at = |e: crate::Error| invalid!("unit_locations for {}: {e}", r.key);
            if let Some(base) = &req.base {
                time_steps::check_steps(&locations[i].base, base.batch_seq()?.1).map_err(at)?;
            }
            if let Some(Some(src)) = sources.get(r.group) {
                time_steps::check_steps(&locations[i].source, src.batch_seq()?.1).map_err(at)?;
            }
        }
        Ok(())
    }

    fn resolve_subspaces(&self, subs: &[Option<Vec<Vec<usize>>>]) -> Result<Vec<Dims>> {
        let n = self.reps.len();
        if !subs.is_empty() && subs.len() != n {
            return Err(invalid!(
                "subspaces has {} entries for {n} interventions",
                subs.len()
            ));
        }
        self.reps
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let rows = subs.get(i).and_then(|s| s.as_deref());
                subspace::resolve(rows, r.partition.as_deref(), r.interchange_dim)
                    .map_err(|e| invalid!("subspaces[{i}]: {e}"))
            })
            .collect()
    }

    fn broadcast_sources(&self, sources: &[Option<Input>]) -> Result<Vec<Option<Input>>> {
        if self.reps.is_empty() && sources.iter().any(Option::is_some) {
            return Err(invalid!(
                "sources were given, but the config has no representations (a plain run takes only a base)"
            ));
        }
        match sources.len() {
            0 => Ok(vec![None; self.n_groups]),
            1 => Ok(vec![sources[0].clone(); self.n_groups]),
            k if k == self.n_groups => Ok(sources.to_vec()),
            k => Err(invalid!(
                "{k} sources were given, but the config has {} groups (one source per group; null skips a group)",
                self.n_groups
            )),
        }
    }

    /// Source runs, one per group, each stopping after the deepest layer it feeds.
    fn run_sources_parallel(
        &self,
        sources: &[Option<Input>],
        locations: &[Location],
        given: &[Option<Tensor>],
    ) -> Result<Vec<Option<Tensor>>> {
        let mut acts: Vec<Option<Tensor>> = given.to_vec();
        for (g, src) in sources.iter().enumerate() {
            let Some(src) = src else { continue };
            let members: Vec<usize> = (0..self.reps.len())
                .filter(|&i| self.reps[i].group == g && given[i].is_none() && self.needs_run(i))
                .collect();
            if members.is_empty() {
                continue;
            }
            let mut plan = Plan::new(self);
            for &i in &members {
                plan.getters.push(Getter {
                    rep: i,
                    site: self.source_site(i),
                    units: locations[i].source.clone(),
                });
            }
            self.run_getters(src, &mut plan)?;
            for (i, t) in plan.got {
                acts[i] = Some(t);
            }
        }
        Ok(acts)
    }

    fn run_sources_serial(
        &self,
        sources: &[Option<Input>],
        locations: &[Location],
        dims: &[Dims],
        given: &[Option<Tensor>],
    ) -> Result<Plan<'_>> {
        if given.iter().any(|g| g.is_some()) {
            return Err(invalid!(
                "source_representations are not supported in serial mode; use parallel mode"
            ));
        }
        let mut prev = Plan::new(self);
        for (g, src) in sources.iter().enumerate() {
            let Some(src) = src else { continue };
            let members: Vec<usize> = (0..self.reps.len())
                .filter(|&i| self.reps[i].group == g && self.needs_run(i))
                .collect();
            let mut plan = Plan::new(self);
            plan.setters = std::mem::take(&mut prev.setters);
            for &i in &members {
                plan.getters.push(Getter {
                    rep: i,
                    site: self.source_site(i),
                    units: locations[i].source.clone(),
                });
            }
            self.run_getters(src, &mut plan)?;
            let mut acts = vec![None; self.reps.len()];
            for (i, t) in plan.got {
                acts[i] = Some(t);
            }
            prev = self.setters(&acts, locations, dims, sources, |i| self.reps[i].group == g)?;
        }
        // Constant-source interventions of groups without a source still act on the base.
        let acts = vec![None; self.reps.len()];
        let consts = self.setters(&acts, locations, dims, &vec![None; self.n_groups], |i| {
            !self.intervention(i).needs_source() || self.reps[i].constant_source.is_some()
        })?;
        prev.setters.extend(consts.setters);
        Ok(prev)
    }

    fn needs_run(&self, i: usize) -> bool {
        self.intervention(i).needs_source() && self.reps[i].constant_source.is_none()
    }

    /// Skip reads the module input of the hooked module in the source run.
    fn source_site(&self, i: usize) -> Site {
        let r = &self.reps[i];
        if self.intervention(i).reads_module_input() {
            let c = match r.site.component {
                Component::BlockOutput => Component::BlockInput,
                Component::MlpOutput => Component::MlpInput,
                Component::AttentionOutput => Component::AttentionInput,
                c => c,
            };
            Site::new(r.site.layer, c)
        } else {
            r.site
        }
    }

    fn run_getters(&self, src: &Input, plan: &mut Plan<'_>) -> Result<()> {
        // Nothing after the deepest getter can change what the getters see.
        let opts = ForwardOptions {
            logits: LogitPositions::None,
            stop_after_layer: plan.getters.iter().map(|g| g.site.layer).max(),
            differentiable: false,
        };
        self.model.forward(src, plan, &opts)?;
        for (rep, reads) in std::mem::take(&mut plan.step_got) {
            plan.got.insert(rep, reads.finish()?);
        }
        for g in &plan.getters {
            if !plan.got.contains_key(&g.rep) {
                return Err(invalid!(
                    "the source run never reached {} for {}",
                    g.site,
                    self.reps[g.rep].key
                ));
            }
        }
        Ok(())
    }

    /// Setters for the representations `keep` selects, with their sources.
    fn setters(
        &self,
        acts: &[Option<Tensor>],
        locations: &[Location],
        dims: &[Dims],
        sources: &[Option<Input>],
        keep: impl Fn(usize) -> bool,
    ) -> Result<Plan<'_>> {
        let mut plan = Plan::new(self);
        for (i, r) in self.reps.iter().enumerate() {
            if !keep(i) {
                continue;
            }
            let iv = self.intervention(i);
            let source = match (&r.constant_source, &acts[i]) {
                (Some(c), _) => Some(c.clone()),
                (None, Some(a)) => Some(a.clone()),
                (None, None) => None,
            };
            if source.is_none() && iv.needs_source() {
                // A null source for this group, next to real ones, skips it (pyvene's
                // intervention skipping); with no source at all it is a mistake.
                let skipped = sources.iter().any(|s| s.is_some()) && sources[r.group].is_none();
                if skipped {
                    continue;
                }
                return Err(invalid!(
                    "{} ({}) needs a source: give sources for group {}, source_representations, or a source_representation in the config",
                    r.key,
                    iv.type_name(),
                    r.group
                ));
            }
            plan.setters.push(Setter {
                rep: i,
                site: r.site,
                units: locations[i].base.clone(),
                source,
                dims: dims[i].clone(),
                gated: false,
            });
        }
        Ok(plan)
    }

    /// One setter: gather, flatten for distributed types, apply, unflatten, scatter.
    fn apply_setter(
        &self,
        s: &Setter,
        x: Tensor,
        collected: &mut Vec<(usize, Tensor)>,
        hot: &mut HashMap<usize, Tensor>,
    ) -> Result<Tensor> {
        let r = &self.reps[s.rep];
        let iv = self.intervention(s.rep);
        let linked = self.config.representations[s.rep]
            .intervention_link_key
            .is_some();
        // pyvene's hot activations: a linked intervention that already ran in this forward hands
        // its output to the next one as that one's base.
        let base = match hot.get(&r.intervention).filter(|_| linked) {
            Some(h) => {
                let fresh = gather(&x, &s.units)?;
                if h.dims() != fresh.dims() {
                    return Err(invalid!(
                        "{}: linked interventions must select the same shape ({:?} vs {:?})",
                        r.key,
                        h.dims(),
                        fresh.dims()
                    ));
                }
                h.clone()
            }
            None => gather(&x, &s.units)?,
        };
        let flatten = iv.distributed() && !r.keep_last_dim && base.rank() > 2;
        let shaped = if flatten {
            flatten_units(&base)?
        } else {
            base.clone()
        };
        let source = match &s.source {
            None => None,
            Some(src) => {
                let src = if flatten && src.dims() == base.dims() {
                    flatten_units(src)?
                } else {
                    src.clone()
                };
                Some(broadcast_source(&src, &shaped).map_err(|e| invalid!("{}: {e}", r.key))?)
            }
        };
        let out = iv
            .apply(&shaped, source.as_ref(), &s.dims)
            .map_err(|e| invalid!("{} ({}): {e}", r.key, iv.type_name()))?;
        if iv.is_collect() {
            collected.push((s.rep, out));
            return Ok(x);
        }
        let out = if flatten {
            unflatten_units(&out, base.dims())?
        } else {
            out
        };
        if linked {
            hot.insert(r.intervention, out.clone());
        }
        scatter(&x, &s.units, &out).map_err(|e| invalid!("{}: {e}", r.key))
    }
}

impl IntervenableModel {
    /// A unit-"t" setter at one time step of a (batch, d) site: the selected examples take
    /// the intervention (their slot's source row), the others keep their row. Collect reads
    /// the selected rows. (pyvene 0.1.8 instead writes zeros at unselected steps, runs
    /// constant-source interventions at every step, and fails on batches of more than one.)
    fn apply_step_setter(
        &self,
        s: &Setter,
        x: Tensor,
        step: Option<usize>,
        reads: &mut HashMap<usize, StepReads>,
        collected: &mut Vec<(usize, Tensor)>,
        hot: &mut HashMap<usize, Tensor>,
    ) -> Result<Tensor> {
        let r = &self.reps[s.rep];
        let t = step.ok_or_else(|| {
            invalid!(
                "{}: unit t needs a recurrent model that reports its time steps",
                r.key
            )
        })?;
        let Some(slots) = time_steps::slots(&s.units, x.dim(0)?, t)? else {
            return Ok(x);
        };
        let iv = self.intervention(s.rep);
        if iv.is_collect() {
            let out = iv
                .apply(&x, None, &s.dims)
                .map_err(|e| invalid!("{} ({}): {e}", r.key, iv.type_name()))?;
            reads.entry(s.rep).or_default().read(&out, &slots)?;
            return Ok(x);
        }
        let source = match &s.source {
            None => None,
            Some(src) => Some(
                time_steps::step_source(src, &slots, &x).map_err(|e| invalid!("{}: {e}", r.key))?,
            ),
        };
        let one_step = Setter {
            rep: s.rep,
            site: s.site,
            units: Units::Whole,
            source,
            dims: s.dims.clone(),
            gated: false,
        };
        let out = self.apply_setter(&one_step, x.clone(), collected, hot)?;
        time_steps::merge_rows(&x, &out, &slots)
    }
}

/// pyvene's broadcast: a source of another shape is read as one feature vector for every unit.
fn broadcast_source(src: &Tensor, base: &Tensor) -> Result<Tensor> {
    if src.dims() == base.dims() {
        return Ok(src.to_dtype(base.dtype())?);
    }
    let d = base.dim(candle_core::D::Minus1)?;
    if src.elem_count() == d {
        return Ok(src
            .reshape(d)?
            .to_dtype(base.dtype())?
            .broadcast_as(base.dims())?
            .contiguous()?);
    }
    Err(invalid!(
        "the source has shape {:?}, which cannot be broadcast into the base units {:?} (unit counts must match between source and base)",
        src.dims(),
        base.dims()
    ))
}

/// (b, u, d) -> (b, u*d); (b, h, p, d) -> (b, p, h*d), as pyvene flattens distributed inputs.
fn flatten_units(t: &Tensor) -> Result<Tensor> {
    match *t.dims() {
        [b, u, d] => Ok(t.reshape((b, u * d))?),
        [b, h, p, d] => Ok(t.transpose(1, 2)?.contiguous()?.reshape((b, p, h * d))?),
        _ => Ok(t.clone()),
    }
}

fn unflatten_units(t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    match *shape {
        [b, u, d] => Ok(t.reshape((b, u, d))?),
        [b, h, p, d] => Ok(t.reshape((b, p, h, d))?.transpose(1, 2)?.contiguous()?),
        _ => Ok(t.clone()),
    }
}

fn compile(
    model: &Model,
    r: &RepresentationConfig,
    key: &str,
    group: usize,
    tensors: &HashMap<String, Tensor>,
) -> Result<Representation> {
    let component = Component::parse(&r.component).map_err(|e| {
        if r.component.contains('.') {
            invalid!(
                "component '{}' looks like a module path; vene addresses sites by component name only. {e}",
                r.component
            )
        } else {
            e
        }
    })?;
    let site = Site::new(r.layer, component);
    let info = model.check_site(site)?;
    let unit = Unit::parse(&r.unit)?;
    if matches!(unit, Unit::Head | Unit::HeadPos)
        && !(component.is_head() || component == Component::AttentionWeight)
    {
        return Err(invalid!(
            "unit '{}' selects heads, but {component} has no head axis; use a head_* component",
            r.unit
        ));
    }
    if (unit == Unit::Time) != component.is_gru() {
        return Err(if component.is_gru() {
            invalid!(
                "{component} is a GRU site, which fires once per time step: use unit 't', not '{}'",
                r.unit
            )
        } else {
            invalid!(
                "unit 't' selects time steps of a recurrent (GRU) site, but {component} is not one; use 'pos'"
            )
        });
    }
    let constant_source = match &r.source_representation {
        None => None,
        Some(serde_json::Value::String(name)) => {
            let t = tensors.get(name).ok_or_else(|| {
                invalid!("source_representation: no tensor named '{name}' in the request's tensors")
            })?;
            Some(t.to_device(model.device())?)
        }
        Some(v) => Some(
            crate::request::json::tensor_from_json(v, model.device())
                .map_err(|e| invalid!("source_representation: {e}"))?,
        ),
    };
    let interchange_dim = match &r.interchange_dim {
        None => None,
        Some(v) => v.as_u64().map(|x| Some(x as usize)).unwrap_or(None),
    };
    Ok(Representation {
        key: key.to_string(),
        site,
        unit,
        group,
        intervention: 0,
        constant_source,
        interchange_dim: interchange_dim.or(Some(info.dim * r.max_number_of_units)),
        partition: r.subspace_partition.clone(),
        keep_last_dim: r.keep_last_dim,
        embed_dim: info.dim * r.max_number_of_units,
    })
}

struct Getter {
    rep: usize,
    site: Site,
    units: Units,
}

struct Setter {
    rep: usize,
    site: Site,
    units: Units,
    source: Option<Tensor>,
    dims: Dims,
    /// During generation: acts only on the calls the gating allows (see `generate`).
    gated: bool,
}

/// Whether a setter acts on generation call `call` (0 = the prompt).
fn gate_open(s: &Setter, call: usize, on_prompt: bool) -> bool {
    !s.gated || (call == 0) == on_prompt
}

/// The hooks of one forward: setters first (in config order), then getters, at each site.
struct Plan<'a> {
    owner: &'a IntervenableModel,
    setters: Vec<Setter>,
    getters: Vec<Getter>,
    got: HashMap<usize, Tensor>,
    collected: Vec<(usize, Tensor)>,
    /// Latest output of each linked intervention object in this forward.
    hot: HashMap<usize, Tensor>,
    /// Generation: the current call (0 = prompt) and which calls gated setters act on.
    call: usize,
    on_prompt: bool,
    /// Recurrent models: the current time step, and unit-"t" reads by getters and collects.
    step: Option<usize>,
    step_got: HashMap<usize, StepReads>,
    step_collected: HashMap<usize, StepReads>,
}

impl<'a> Plan<'a> {
    fn new(owner: &'a IntervenableModel) -> Self {
        Plan {
            owner,
            setters: Vec::new(),
            getters: Vec::new(),
            got: HashMap::new(),
            collected: Vec::new(),
            hot: HashMap::new(),
            call: 0,
            on_prompt: false,
            step: None,
            step_got: HashMap::new(),
            step_collected: HashMap::new(),
        }
    }

    fn active(&self, s: &Setter) -> bool {
        gate_open(s, self.call, self.on_prompt)
    }

    /// Collected tensors in representation order, then call order.
    fn take_collected(&mut self) -> Result<Vec<Tensor>> {
        let mut c = std::mem::take(&mut self.collected);
        for (rep, reads) in std::mem::take(&mut self.step_collected) {
            c.push((rep, reads.finish()?));
        }
        c.sort_by_key(|(r, _)| *r);
        Ok(c.into_iter().map(|(_, t)| t).collect())
    }
}

impl Hooks for Plan<'_> {
    fn wants(&self, site: Site) -> bool {
        self.setters
            .iter()
            .any(|s| s.site == site && self.active(s))
            || self.getters.iter().any(|g| g.site == site)
    }

    fn visit(&mut self, site: Site, value: &Tensor) -> Result<Option<Tensor>> {
        let set = self.set(site, value)?;
        self.get(site, set.as_ref().unwrap_or(value))?;
        Ok(set)
    }

    fn time_step(&mut self, t: usize) {
        self.step = Some(t);
        // Linked interventions hand outputs on within one step, never across steps.
        self.hot.clear();
    }

    fn unchanged_prefix(&self) -> usize {
        self.setters
            .iter()
            .filter(|s| self.active(s))
            .map(|s| first_set_position(self.owner.reps[s.rep].unit, s))
            .min()
            .unwrap_or(0)
    }
}

/// The first position any row of `s` writes; 0 when its units are not positions (whole
/// tensors, heads, `attention_weight`'s dim 1, time steps).
fn first_set_position(unit: Unit, s: &Setter) -> usize {
    let per_position =
        !s.site.component.is_head() && s.site.component != Component::AttentionWeight;
    let rows = match (&s.units, unit) {
        (Units::Index(rows), Unit::Pos) if per_position => rows,
        (Units::HeadPos { positions, .. }, Unit::HeadPos) => positions,
        _ => return 0,
    };
    rows.iter().flatten().copied().min().unwrap_or(0)
}

impl Plan<'_> {
    /// The setters at `site`, in config order; `None` when none acted.
    fn set(&mut self, site: Site, value: &Tensor) -> Result<Option<Tensor>> {
        let mut x = value.clone();
        let mut changed = false;
        let (call, on_prompt) = (self.call, self.on_prompt);
        for s in self
            .setters
            .iter()
            .filter(|s| s.site == site && gate_open(s, call, on_prompt))
        {
            x = if self.owner.reps[s.rep].unit == Unit::Time {
                self.owner.apply_step_setter(
                    s,
                    x,
                    self.step,
                    &mut self.step_collected,
                    &mut self.collected,
                    &mut self.hot,
                )?
            } else {
                self.owner
                    .apply_setter(s, x, &mut self.collected, &mut self.hot)?
            };
            changed = true;
        }
        Ok(changed.then_some(x))
    }

    /// The getters at `site` read `x`.
    fn get(&mut self, site: Site, x: &Tensor) -> Result<()> {
        for g in self.getters.iter().filter(|g| g.site == site) {
            if self.owner.reps[g.rep].unit == Unit::Time {
                let t = self.step.ok_or_else(|| {
                    invalid!("unit t needs a recurrent model that reports its time steps")
                })?;
                if let Some(slots) = time_steps::slots(&g.units, x.dim(0)?, t)? {
                    self.step_got.entry(g.rep).or_default().read(x, &slots)?;
                }
            } else {
                self.got.insert(g.rep, gather(x, &g.units)?);
            }
        }
        Ok(())
    }
}

/// The hooks of a base run that carries its source rows (after the base rows) up to the
/// deepest getter: getters read the source rows, then setters act on the base rows with
/// what the getters just read.
struct Sharing<'a> {
    plan: Plan<'a>,
    base_rows: usize,
    /// Representations whose setter source comes from a getter in this forward.
    pending: Vec<usize>,
}

impl Hooks for Sharing<'_> {
    fn wants(&self, site: Site) -> bool {
        self.plan.wants(site)
    }

    fn visit(&mut self, site: Site, value: &Tensor) -> Result<Option<Tensor>> {
        let rows = value.dim(0)?;
        if rows == self.base_rows {
            return self.plan.set(site, value);
        }
        let base = value.narrow(0, 0, self.base_rows)?;
        let source = value.narrow(0, self.base_rows, rows - self.base_rows)?;
        self.plan.get(site, &source)?;
        for s in self.plan.setters.iter_mut() {
            if s.source.is_none() && self.pending.contains(&s.rep) {
                s.source = self.plan.got.get(&s.rep).cloned();
            }
        }
        Ok(match self.plan.set(site, &base)? {
            Some(b) => Some(Tensor::cat(&[&b, &source], 0)?),
            None => None,
        })
    }
}
