//! What each task of a job restores from a checkpoint or savepoint, at the same parallelism or
//! another. Keyed state and timers re-split by key-group range; a guest's own state
//! (`snapshot-state`) only restores into the same subtask at the same parallelism; sources
//! re-deal the ranges they had left.

use std::collections::BTreeMap;

use crate::checkpoint::storage::{RestoreError, RestoredState, StateHandle, read_state_file};
use crate::connectors::redistribute;
use crate::job::{JobGraph, OperatorImpl, SourceSpec, VertexInput};
use crate::runtime::deployment::StateFileHandle;
use crate::state::key_groups::key_group_range;

/// A checked restore of one job graph from one checkpoint.
pub(super) struct RestorePlan<'a> {
    restored: &'a RestoredState,
    handles: BTreeMap<&'a str, Vec<&'a StateHandle>>,
}

fn overlaps(a: &std::ops::Range<u32>, b: &std::ops::Range<u32>) -> bool {
    a.start < b.end && b.start < a.end
}

impl<'a> RestorePlan<'a> {
    pub(super) fn new(
        graph: &JobGraph,
        restored: &'a RestoredState,
        allow_non_restored: bool,
    ) -> Result<Self, RestoreError> {
        let meta = &restored.metadata;
        if meta.max_parallelism != graph.max_parallelism {
            return Err(RestoreError::Incompatible(format!(
                "the checkpoint has {} key groups (max_parallelism) and the job {}; they must match",
                meta.max_parallelism, graph.max_parallelism
            )));
        }
        let mut handles: BTreeMap<&str, Vec<&StateHandle>> = BTreeMap::new();
        for h in &meta.operators {
            handles.entry(h.operator.as_str()).or_default().push(h);
        }
        let mut known: BTreeMap<&str, u32> = BTreeMap::new();
        for vertex in &graph.vertices {
            for id in &vertex.node_ids {
                known.insert(id.as_str(), vertex.parallelism);
            }
        }
        let unmatched: Vec<&str> = handles
            .keys()
            .copied()
            .chain(meta.sources.iter().map(|s| s.source.as_str()))
            .filter(|id| !known.contains_key(id))
            .collect();
        if !unmatched.is_empty() && !allow_non_restored {
            return Err(RestoreError::Incompatible(format!(
                "`{}` holds state of {} that the job no longer has; allow dropping it with \
                 --allow-non-restored-state",
                restored.dir.display(),
                unmatched
                    .iter()
                    .map(|id| format!("`{id}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        for vertex in &graph.vertices {
            for op in &vertex.operators {
                let Some(list) = handles.get(op.id.as_str()) else {
                    continue;
                };
                if let OperatorImpl::Native(_) = op.implementation {
                    continue;
                }
                let old = list[0].parallelism;
                if old == vertex.parallelism {
                    continue;
                }
                for h in list {
                    let path = restored.dir.join(&h.file);
                    let snapshot = read_state_file(&path, h.crc32, 0..0)?;
                    if !snapshot.guest_state.is_empty() {
                        return Err(RestoreError::Incompatible(format!(
                            "operator `{}` keeps state of its own (snapshot-state), which cannot be \
                             re-split from parallelism {old} to {}; restore it at parallelism {old}",
                            op.id, vertex.parallelism
                        )));
                    }
                }
            }
        }
        Ok(RestorePlan { restored, handles })
    }

    /// For subtask `s` of vertex `v`: the state files of each of its wasm operators (read by the
    /// task as it opens), and for a source the ranges it has left.
    pub(super) fn for_subtask(
        &self,
        graph: &JobGraph,
        v: usize,
        s: u32,
    ) -> (Option<Vec<Vec<StateFileHandle>>>, Option<Vec<(u64, u64)>>) {
        let vertex = &graph.vertices[v];
        let max = graph.max_parallelism;
        let range = key_group_range(s, max, vertex.parallelism);
        let mut per_operator = Vec::new();
        for op in &vertex.operators {
            if let OperatorImpl::Native(_) = op.implementation {
                continue;
            }
            let mut snapshots = Vec::new();
            for h in self.handles.get(op.id.as_str()).into_iter().flatten() {
                let same = h.parallelism == vertex.parallelism;
                let wanted = if same {
                    h.subtask == s
                } else {
                    overlaps(&key_group_range(h.subtask, max, h.parallelism), &range)
                };
                if wanted {
                    snapshots.push(StateFileHandle {
                        path: self.restored.dir.join(&h.file),
                        crc32: h.crc32,
                        key_groups: range.clone(),
                    });
                }
            }
            per_operator.push(snapshots);
        }
        let ranges = match &vertex.input {
            VertexInput::Source(_) => {
                let id = &vertex.node_ids[0];
                let old: Vec<(u32, Vec<(u64, u64)>)> = self
                    .restored
                    .metadata
                    .sources
                    .iter()
                    .filter(|st| &st.source == id)
                    .map(|st| (st.subtask, st.remaining.clone()))
                    .collect();
                if old.is_empty() {
                    None
                } else if matches!(vertex.input, VertexInput::Source(SourceSpec::Nats(_))) {
                    // What a NATS source's checkpoint covers may be delivered again to any
                    // subtask: each skips all of it.
                    Some(old.into_iter().flat_map(|(_, r)| r).collect())
                } else {
                    let old_par = old.iter().map(|(st, _)| st + 1).max().unwrap_or(1);
                    Some(redistribute(&old, s, vertex.parallelism, old_par))
                }
            }
            VertexInput::Edges(_) => None,
        };
        (Some(per_operator), ranges)
    }
}
