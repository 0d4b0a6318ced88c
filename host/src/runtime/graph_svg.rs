//! A blueprint's state graph drawn as SVG in the server, for the dashboard
//! (`GET /api/v1/blueprints/{name}/graph?format=svg&state=…`), so no browser
//! library and no graphviz is needed.
//!
//! The layout is layered, left to right: states are put in columns by the
//! longest path from the start state once back edges (loops) are set aside,
//! ordered within a column by the barycentre of their neighbours for a few
//! sweeps, and joined by arrows; back edges curve above the boxes. `layout-rs`
//! was looked at: it lays out DOT well, but gives a node no class or data
//! attribute, which the dashboard styles and the tests find the current
//! state by, and it would be a second graph model next to [`Graph`]'s.
//!
//! The SVG has no `<style>` element and no `style` attributes, only
//! presentation attributes, so it shows under the dashboard's strict
//! Content-Security-Policy when inserted into the page.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::graph::{EndKind, Graph};

/// Most states drawn; a larger graph is asked for as DOT instead. Nothing
/// bounds a blueprint's states but its memory limit, and the layout's
/// sweeps grow with states times transitions.
pub const MAX_SVG_STATES: usize = 500;
/// Most transitions drawn, for the same reason.
pub const MAX_SVG_TRANSITIONS: usize = 5000;
/// Longer names are cut on the box (the full name is in its `<title>`).
const MAX_LABEL_CHARS: usize = 32;

const PAD: f64 = 24.0;
const BOX_H: f64 = 34.0;
const MIN_BOX_W: f64 = 70.0;
const CHAR_W: f64 = 7.4;
const LABEL_PAD: f64 = 14.0;
const COLUMN_GAP: f64 = 70.0;
const ROW_GAP: f64 = 22.0;
/// Room above the boxes for the back edges' curves.
const ARC_ROOM: f64 = 40.0;
const SWEEPS: usize = 4;

const FINISHED: &str = "#2e7d32";
const FAILED: &str = "#c62828";
const PLAIN: &str = "#455a64";
const CURRENT_FILL: &str = "#ffe082";
const VISITED_FILL: &str = "#e3f2fd";
const FILL: &str = "#ffffff";

/// What to mark on the drawing besides the graph itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct Marks<'a> {
    /// The job's current state: filled and outlined thicker, `class="state current"`.
    pub current: Option<&'a str>,
    /// States the job went through: lightly filled, `class="state visited"`.
    pub visited: &'a [String],
}

/// A place in a column: a state, or where a transition passes through a
/// column it skips (so it runs between boxes rather than across them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot<'a> {
    State(&'a str),
    Via(usize),
}

/// The columns, top to bottom, and the waypoints of each long transition.
struct Layout<'a> {
    columns: Vec<Vec<Slot<'a>>>,
    vias: BTreeMap<(&'a str, &'a str), Vec<Slot<'a>>>,
    /// Whether any transition arcs over the boxes (loops, back edges, edges
    /// within a column), which need room above them.
    arcs: bool,
}

/// Waypoints above this many are not made (long transitions then cross
/// columns directly): with many long transitions they would outnumber the
/// states by far.
const MAX_VIAS: usize = 4 * MAX_SVG_STATES;

#[derive(Debug, Clone, Copy)]
struct Placed {
    column: usize,
    x: f64,
    y: f64,
    w: f64,
}

impl Graph {
    /// The graph as a standalone SVG document; `Err` says why it is too
    /// large to draw.
    pub fn to_svg(&self, marks: Marks<'_>) -> Result<String, String> {
        let transitions: usize = self.states.values().map(|node| node.transitions.len()).sum();
        if self.states.len() > MAX_SVG_STATES || transitions > MAX_SVG_TRANSITIONS {
            return Err(format!(
                "the graph has {} states and {transitions} transitions, more than the {MAX_SVG_STATES} and \
                 {MAX_SVG_TRANSITIONS} drawn as SVG; ask for it as DOT",
                self.states.len()
            ));
        }
        let layout = self.layout();
        let placed = place(&layout.columns, if layout.arcs { ARC_ROOM } else { 0.0 });
        let at = |name: &str| placed[&Slot::State(name)];

        let width = placed.values().map(|p| p.x + p.w).fold(0.0, f64::max) + PAD;
        let height = placed.values().map(|p| p.y + BOX_H).fold(0.0, f64::max) + PAD;
        let mut svg = String::with_capacity(512 + placed.len() * 400);
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="state-graph" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12"><title>{}</title>"#,
            escape(&self.name)
        );
        svg.push_str(concat!(
            r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">"#,
            r##"<path d="M0,0 L10,5 L0,10 z" fill="#546e7a"/></marker></defs>"##,
        ));

        svg.push_str(r#"<g class="transitions">"#);
        for (name, node) in &self.states {
            for target in &node.transitions {
                let vias: Vec<Placed> = layout
                    .vias
                    .get(&(name.as_str(), target.as_str()))
                    .map(|vias| vias.iter().map(|via| placed[via]).collect())
                    .unwrap_or_default();
                let _ = write!(
                    svg,
                    r##"<path class="transition" data-from="{}" data-to="{}" d="{}" fill="none" stroke="#546e7a" stroke-width="1.3" marker-end="url(#arrow)"/>"##,
                    escape(name),
                    escape(target),
                    edge_path(name == target, at(name), at(target), &vias)
                );
            }
        }
        svg.push_str("</g>");

        svg.push_str(r#"<g class="states">"#);
        for (slot, p) in &placed {
            let Slot::State(name) = *slot else { continue };
            let node = &self.states[name];
            let current = marks.current == Some(name);
            let visited = !current && marks.visited.iter().any(|v| v == name);
            let mut class = String::from("state");
            for (on, word) in [
                (*name == self.start, " start"),
                (node.end == Some(EndKind::Finished), " end finished"),
                (node.end == Some(EndKind::Failed), " end failed"),
                (visited, " visited"),
                (current, " current"),
            ] {
                if on {
                    class.push_str(word);
                }
            }
            let colour = match node.end {
                Some(EndKind::Finished) => FINISHED,
                Some(EndKind::Failed) => FAILED,
                None => PLAIN,
            };
            let fill = if current {
                CURRENT_FILL
            } else if visited {
                VISITED_FILL
            } else {
                FILL
            };
            let stroke_width = if current {
                3.0
            } else if *name == self.start {
                2.2
            } else {
                1.4
            };
            let _ = write!(
                svg,
                r#"<g class="{class}" data-state="{}"><title>{}</title><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{BOX_H}" rx="6" fill="{fill}" stroke="{colour}" stroke-width="{stroke_width}"/>"#,
                escape(name),
                escape(name),
                p.x,
                p.y,
                p.w,
            );
            if node.end.is_some() {
                // The double outline of an end state, as DOT's doublecircle.
                let _ = write!(
                    svg,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="4" fill="none" stroke="{colour}" stroke-width="1.2"/>"#,
                    p.x + 3.5,
                    p.y + 3.5,
                    p.w - 7.0,
                    BOX_H - 7.0,
                );
            }
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" dominant-baseline="central" fill="#212121"{}>{}</text></g>"##,
                p.x + p.w / 2.0,
                p.y + BOX_H / 2.0,
                if current { r#" font-weight="bold""# } else { "" },
                escape(&label(name)),
            );
        }
        svg.push_str("</g></svg>\n");
        Ok(svg)
    }

    /// The states by column, each column in drawing order (top to bottom),
    /// with a waypoint wherever a transition skips a column.
    fn layout<'a>(&'a self) -> Layout<'a> {
        // Depth-first from the start, then from any state it does not reach
        // (in name order): an edge to a state still on the stack closes a
        // loop and is left out of the layering.
        let mut finished_order: Vec<&str> = Vec::with_capacity(self.states.len());
        let mut back: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let roots = std::iter::once(self.start.as_str()).chain(self.states.keys().map(String::as_str));
        for root in roots {
            if !seen.insert(root) {
                continue;
            }
            // An explicit stack: a long chain of states must not overflow ours.
            let mut stack: Vec<(&str, std::collections::btree_set::Iter<'_, String>)> =
                vec![(root, self.states[root].transitions.iter())];
            let mut on_stack: BTreeSet<&str> = BTreeSet::from([root]);
            while let Some((state, next)) = stack.last_mut() {
                let state = *state;
                match next.next() {
                    Some(target) if on_stack.contains(target.as_str()) => {
                        back.insert((state, target.as_str()));
                    }
                    Some(target) if seen.insert(target.as_str()) => {
                        on_stack.insert(target.as_str());
                        stack.push((target.as_str(), self.states[target.as_str()].transitions.iter()));
                    }
                    Some(_) => {}
                    None => {
                        on_stack.remove(state);
                        finished_order.push(state);
                        stack.pop();
                    }
                }
            }
        }
        // Longest path over the forward edges, in topological order.
        let mut column: BTreeMap<&str, usize> = self.states.keys().map(|s| (s.as_str(), 0)).collect();
        for &state in finished_order.iter().rev() {
            let here = column[state];
            for target in &self.states[state].transitions {
                if !back.contains(&(state, target.as_str())) && column[target.as_str()] < here + 1 {
                    column.insert(target.as_str(), here + 1);
                }
            }
        }
        let depth = column.values().copied().max().unwrap_or(0);
        let mut columns: Vec<Vec<Slot<'_>>> = vec![Vec::new(); depth + 1];
        // First order: the order the search found them in.
        for &state in finished_order.iter().rev() {
            columns[column[state]].push(Slot::State(state));
        }

        // Neighbours in both directions, loops included (a state pulled
        // towards what it returns to reads better); a transition that skips
        // columns goes through a waypoint in each.
        let mut preds: BTreeMap<Slot<'a>, Vec<Slot<'a>>> = BTreeMap::new();
        let mut succs: BTreeMap<Slot<'a>, Vec<Slot<'a>>> = BTreeMap::new();
        let mut link = |a: Slot<'a>, b: Slot<'a>| {
            succs.entry(a).or_default().push(b);
            preds.entry(b).or_default().push(a);
        };
        let mut vias = BTreeMap::new();
        let mut made = 0;
        let mut arcs = false;
        for (name, node) in &self.states {
            let (from, from_column) = (name.as_str(), column[name.as_str()]);
            for target in &node.transitions {
                let to_column = column[target.as_str()];
                arcs |= to_column <= from_column;
                if target == name {
                    continue;
                }
                let skipped = to_column.saturating_sub(from_column + 1);
                if skipped == 0 || made + skipped > MAX_VIAS {
                    link(Slot::State(from), Slot::State(target));
                    continue;
                }
                let chain: Vec<Slot<'_>> = (made..made + skipped).map(Slot::Via).collect();
                made += skipped;
                for (offset, via) in chain.iter().enumerate() {
                    columns[from_column + 1 + offset].push(*via);
                }
                let mut previous = Slot::State(from);
                for via in &chain {
                    link(previous, *via);
                    previous = *via;
                }
                link(previous, Slot::State(target));
                vias.insert((from, target.as_str()), chain);
            }
        }

        for sweep in 0..SWEEPS {
            let (order, neighbours): (Vec<usize>, _) = if sweep % 2 == 0 {
                ((1..columns.len()).collect(), &preds)
            } else {
                ((0..depth).rev().collect(), &succs)
            };
            let mut position: BTreeMap<Slot<'_>, usize> =
                columns.iter().flat_map(|col| col.iter().enumerate().map(|(i, s)| (*s, i))).collect();
            for c in order {
                let mut keyed: Vec<(f64, usize, Slot<'_>)> = columns[c]
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let around: Vec<usize> =
                            neighbours.get(s).map(|ns| ns.iter().map(|n| position[n]).collect()).unwrap_or_default();
                        // A slot without neighbours keeps its place.
                        let key = if around.is_empty() {
                            i as f64
                        } else {
                            around.iter().sum::<usize>() as f64 / around.len() as f64
                        };
                        (key, i, *s)
                    })
                    .collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                columns[c] = keyed.into_iter().map(|(_, _, s)| s).collect();
                for (i, s) in columns[c].iter().enumerate() {
                    position.insert(*s, i);
                }
            }
        }
        Layout { columns, vias, arcs }
    }
}

/// Coordinates: columns as wide as their widest box, each centred
/// vertically. A waypoint spans its column's width.
fn place<'a>(columns: &[Vec<Slot<'a>>], arc_room: f64) -> BTreeMap<Slot<'a>, Placed> {
    let tallest = columns.iter().map(Vec::len).max().unwrap_or(0) as f64;
    let full_height = tallest * BOX_H + (tallest - 1.0).max(0.0) * ROW_GAP;
    let mut placed = BTreeMap::new();
    let mut x = PAD;
    for (c, column) in columns.iter().enumerate() {
        let states = column.iter().filter_map(|slot| match slot {
            Slot::State(name) => Some(box_width(name)),
            Slot::Via(_) => None,
        });
        let width = states.fold(MIN_BOX_W, f64::max);
        let n = column.len() as f64;
        let height = n * BOX_H + (n - 1.0).max(0.0) * ROW_GAP;
        let top = PAD + arc_room + (full_height - height) / 2.0;
        for (i, slot) in column.iter().enumerate() {
            let w = match slot {
                Slot::State(name) => box_width(name),
                Slot::Via(_) => width,
            };
            let y = top + i as f64 * (BOX_H + ROW_GAP);
            placed.insert(*slot, Placed { column: c, x: x + (width - w) / 2.0, y, w });
        }
        x += width + COLUMN_GAP;
    }
    placed
}

fn box_width(name: &str) -> f64 {
    (label(name).chars().count() as f64 * CHAR_W + 2.0 * LABEL_PAD).max(MIN_BOX_W)
}

/// An arrow from `from` to `to`: a forward edge leaves the right side for the
/// left side of a later column, through its waypoints; a loop back, or an
/// edge within a column, arcs over the top.
fn edge_path(to_itself: bool, from: Placed, to: Placed, vias: &[Placed]) -> String {
    if to_itself {
        let (x, y) = (from.x + from.w / 2.0, from.y);
        return format!(
            "M{:.1},{y:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{y:.1}",
            x - 8.0,
            x - 22.0,
            y - 30.0,
            x + 22.0,
            y - 30.0,
            x + 8.0
        );
    }
    if to.column > from.column {
        let mid = |p: &Placed| p.y + BOX_H / 2.0;
        let (mut x, mut y) = (from.x + from.w, mid(&from));
        let mut d = format!("M{x:.1},{y:.1}");
        // Each hop curves into the next column and runs straight through a waypoint.
        for via in vias {
            let (vx, vy) = (via.x, mid(via));
            let bend = (vx - x) / 2.0;
            let _ = write!(
                d,
                " C{:.1},{y:.1} {:.1},{vy:.1} {vx:.1},{vy:.1} L{:.1},{vy:.1}",
                x + bend,
                vx - bend,
                vx + via.w
            );
            (x, y) = (vx + via.w, vy);
        }
        let (tx, ty) = (to.x, mid(&to));
        let bend = (tx - x) / 2.0;
        let _ = write!(d, " C{:.1},{y:.1} {:.1},{ty:.1} {tx:.1},{ty:.1}", x + bend, tx - bend);
        return d;
    }
    let (sx, sy) = (from.x + from.w / 2.0, from.y);
    let (tx, ty) = (to.x + to.w / 2.0, to.y);
    let lift = ARC_ROOM * 0.6 + (sx - tx).abs().min(600.0) * 0.05;
    let top = sy.min(ty) - lift;
    format!("M{sx:.1},{sy:.1} C{sx:.1},{top:.1} {tx:.1},{top:.1} {tx:.1},{ty:.1}")
}

fn label(name: &str) -> String {
    if name.chars().count() <= MAX_LABEL_CHARS {
        name.to_owned()
    } else {
        let mut cut: String = name.chars().take(MAX_LABEL_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

/// Text for XML content and attribute values. Characters XML 1.0 cannot
/// hold at all (most control characters) become U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::graph::StateNode;

    fn graph(start: &str, states: &[(&str, Option<EndKind>, &[&str])]) -> Graph {
        Graph {
            name: "flow".into(),
            endpoint: None,
            api_version: None,
            start: start.into(),
            states: states
                .iter()
                .map(|(name, end, to)| {
                    (name.to_string(), StateNode { end: *end, transitions: to.iter().map(|s| s.to_string()).collect() })
                })
                .collect(),
        }
    }

    fn order_flow() -> Graph {
        graph(
            "start",
            &[
                ("start", None, &["validate"]),
                ("validate", None, &["charge", "rejected"]),
                ("charge", None, &["ship", "validate", "rejected"]),
                ("ship", None, &["done"]),
                ("done", Some(EndKind::Finished), &[]),
                ("rejected", Some(EndKind::Failed), &[]),
            ],
        )
    }

    /// A small well-formedness check: every tag opens and closes in order,
    /// attribute values are quoted, and text holds no raw `<` or stray `&`.
    fn assert_well_formed(svg: &str) {
        let mut open: Vec<String> = Vec::new();
        let mut rest = svg.trim_end();
        assert!(rest.starts_with("<svg "), "{svg}");
        while let Some(lt) = rest.find('<') {
            check_text(&rest[..lt], svg);
            let gt = tag_end(&rest[lt..]).unwrap_or_else(|| panic!("unclosed tag in {svg}")) + lt;
            let tag = &rest[lt + 1..gt];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "mismatched </{name}> in {svg}");
            } else {
                let self_closing = tag.ends_with('/');
                let body = tag.trim_end_matches('/');
                let name = body.split_whitespace().next().unwrap_or_default();
                assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()), "tag {tag:?}");
                check_attributes(&body[name.len()..], svg);
                if !self_closing {
                    open.push(name.to_owned());
                }
            }
            rest = &rest[gt + 1..];
            if open.is_empty() {
                assert!(rest.is_empty(), "content after the root element: {rest:?}");
            }
        }
        assert!(open.is_empty(), "unclosed elements {open:?}");
    }

    /// The closing `>` of the tag at the start of `s`, outside quoted values.
    fn tag_end(s: &str) -> Option<usize> {
        let mut quoted = false;
        s.char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    quoted = !quoted;
                }
                c == '>' && !quoted
            })
            .map(|(i, _)| i)
    }

    fn check_attributes(mut attrs: &str, svg: &str) {
        loop {
            attrs = attrs.trim_start();
            if attrs.is_empty() {
                return;
            }
            let eq = attrs.find("=\"").unwrap_or_else(|| panic!("attribute without a quoted value: {attrs:?}"));
            let name = &attrs[..eq];
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'), "attribute {name:?}");
            let value_end = attrs[eq + 2..].find('"').unwrap_or_else(|| panic!("unterminated value in {svg}")) + eq + 2;
            check_text(&attrs[eq + 2..value_end], svg);
            attrs = &attrs[value_end + 1..];
        }
    }

    fn check_text(text: &str, svg: &str) {
        assert!(!text.contains('<'), "raw < in {text:?} of {svg}");
        let mut rest = text;
        while let Some(amp) = rest.find('&') {
            rest = &rest[amp..];
            let end = rest.find(';').unwrap_or_else(|| panic!("stray & in {text:?}"));
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&&rest[..=end]),
                "entity {:?}",
                &rest[..=end]
            );
            rest = &rest[end + 1..];
        }
    }

    fn states_with_class<'a>(svg: &'a str, class: &str) -> Vec<&'a str> {
        svg.split("<g class=\"")
            .skip(1)
            .filter(|part| part[..part.find('"').unwrap_or(0)].split(' ').any(|c| c == class))
            .filter_map(|part| part.split("data-state=\"").nth(1)?.split('"').next())
            .collect()
    }

    #[test]
    fn the_svg_is_well_formed_with_a_box_per_state_and_a_path_per_transition() {
        let svg = order_flow().to_svg(Marks::default()).unwrap();
        assert_well_formed(&svg);
        assert_eq!(svg.matches("data-state=").count(), 6, "{svg}");
        assert_eq!(svg.matches("class=\"transition\"").count(), 7, "{svg}");
        let mut ends = states_with_class(&svg, "end");
        ends.sort();
        assert_eq!(ends, vec!["done", "rejected"], "{svg}");
        // The two outlines of each end state.
        assert_eq!(svg.matches("<rect").count(), 6 + 2, "{svg}");
        assert_eq!(states_with_class(&svg, "current"), Vec::<&str>::new());
    }

    #[test]
    fn columns_follow_the_longest_path_and_loops_do_not_push_states_right() {
        let graph = order_flow();
        let layout = graph.layout();
        let columns: Vec<Vec<&str>> = layout
            .columns
            .iter()
            .map(|c| c.iter().filter_map(|s| if let Slot::State(n) = s { Some(*n) } else { None }).collect())
            .collect();
        assert_eq!(columns[0], vec!["start"]);
        assert_eq!(columns[1], vec!["validate"]);
        assert_eq!(columns[2], vec!["charge"]);
        assert_eq!(columns[3].len(), 2, "ship and rejected: {columns:?}");
        assert_eq!(columns[4], vec!["done"]);
        // charge → validate is drawn as an arc over the top, not left to right.
        let svg = graph.to_svg(Marks::default()).unwrap();
        let back = svg.split("data-from=\"charge\" data-to=\"validate\" d=\"").nth(1).unwrap();
        let d = &back[..back.find('"').unwrap()];
        let ys: Vec<f64> = d
            .split([' ', 'M', 'C', ','])
            .filter(|s| !s.is_empty())
            .skip(1)
            .step_by(2)
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(ys[1] < ys[0], "the back edge should rise: {d}");
        // validate → rejected skips charge's column through a waypoint there.
        assert_eq!(layout.columns[2].len(), 2, "charge and a waypoint");
        let long = svg.split("data-from=\"validate\" data-to=\"rejected\" d=\"").nth(1).unwrap();
        assert_eq!(long[..long.find('"').unwrap()].matches(" L").count(), 1, "{svg}");
    }

    #[test]
    fn the_current_state_and_visited_states_are_marked() {
        let visited = vec!["start".to_string(), "validate".to_string()];
        let svg = order_flow().to_svg(Marks { current: Some("charge"), visited: &visited }).unwrap();
        assert_well_formed(&svg);
        assert_eq!(states_with_class(&svg, "current"), vec!["charge"]);
        assert_eq!(states_with_class(&svg, "visited"), vec!["start", "validate"]);
        let charge = svg.split("data-state=\"charge\"").nth(1).unwrap();
        assert!(charge[..charge.find("</g>").unwrap()].contains(CURRENT_FILL), "{svg}");
        // An unknown state marks nothing.
        let svg = order_flow().to_svg(Marks { current: Some("elsewhere"), visited: &[] }).unwrap();
        assert!(states_with_class(&svg, "current").is_empty());
    }

    #[test]
    fn names_are_escaped_in_text_and_attributes() {
        let nasty = "a<b>&\"c\"'d'";
        let graph = graph(nasty, &[(nasty, None, &["x\u{1}y", nasty]), ("x\u{1}y", Some(EndKind::Failed), &[])]);
        let svg = graph.to_svg(Marks { current: Some(nasty), visited: &[] }).unwrap();
        assert_well_formed(&svg);
        assert!(!svg.contains(nasty));
        assert!(svg.contains("data-state=\"a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;\""), "{svg}");
        assert!(svg.contains(">a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;</text>"), "{svg}");
        assert!(svg.contains("x\u{FFFD}y") && !svg.contains('\u{1}'), "{svg}");
        assert_eq!(states_with_class(&svg, "current").len(), 1);
    }

    #[test]
    fn long_names_are_cut_on_the_box_but_kept_in_the_title() {
        let long = "s".repeat(100);
        let svg = graph(&long, &[(&long, None, &[])]).to_svg(Marks::default()).unwrap();
        assert!(svg.contains(&format!("<title>{long}</title>")));
        assert!(svg.contains(&format!(">{}…</text>", "s".repeat(MAX_LABEL_CHARS - 1))));
        let width: f64 = svg.split("width=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        assert!(width < 400.0, "{width}");
    }

    #[test]
    fn the_size_is_bounded() {
        let names: Vec<String> = (0..=MAX_SVG_STATES).map(|i| format!("s{i}")).collect();
        let mut big = graph("s0", &[]);
        for (i, name) in names.iter().enumerate() {
            let to = names.get(i + 1).into_iter().cloned().collect();
            big.states.insert(name.clone(), StateNode { end: None, transitions: to });
        }
        let error = big.to_svg(Marks::default()).unwrap_err();
        assert!(error.contains("ask for it as DOT"), "{error}");
        // Just under the bound a long chain draws, without recursion.
        big.states.remove(&names[MAX_SVG_STATES]);
        big.states.get_mut(&names[MAX_SVG_STATES - 1]).unwrap().transitions.clear();
        assert_well_formed(&big.to_svg(Marks::default()).unwrap());
    }

    #[test]
    fn states_the_start_does_not_reach_are_drawn_too() {
        let graph =
            graph("a", &[("a", None, &["b"]), ("b", Some(EndKind::Finished), &[]), ("orphan", None, &["b", "orphan"])]);
        let svg = graph.to_svg(Marks::default()).unwrap();
        assert_well_formed(&svg);
        assert_eq!(svg.matches("data-state=").count(), 3);
        assert!(svg.contains("data-from=\"orphan\" data-to=\"orphan\""));
    }
}
