//! `trace --svg`: the mesh as a picture that stays readable with many
//! clusters on several networks.
//!
//! Networks are columns (boxes), their clusters stacked in them. Flows are
//! routed orthogonally through corridors that no cluster box lies in: the
//! vertical corridors between the network columns (and one right of the
//! last) and the horizontal gaps between cluster rows. Every flow has its own
//! lane in each corridor it uses and its own port on each box side, so no
//! two arrows share a segment and none passes through a box. A cluster that
//! serves cross-network traffic has its east-west gateway drawn in it, and
//! cross-network arrows end at the gateway. Each arrow carries a numbered
//! badge, placed where it overlaps no box and no other badge; the legend
//! below explains the marks and lists the flows by number.
//!
//! [`layout`] computes the geometry (tests check it: no badge overlaps, no
//! arrow through a box); [`svg`] draws it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Matrix;

/// An axis-aligned rectangle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn intersects(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }

    /// Whether the segment a-b passes through the inside of this rectangle
    /// (touching its border does not count). Segments are axis-aligned.
    pub fn crossed_by(&self, a: (f64, f64), b: (f64, f64)) -> bool {
        let (x0, x1) = (a.0.min(b.0), a.0.max(b.0));
        let (y0, y1) = (a.1.min(b.1), a.1.max(b.1));
        x0 < self.x + self.w - 0.5
            && x1 > self.x + 0.5
            && y0 < self.y + self.h - 0.5
            && y1 > self.y + 0.5
    }
}

/// One arrow between two clusters.
#[derive(Debug, Clone)]
pub struct Flow {
    pub number: usize,
    pub from: String,
    pub to: String,
    pub requests: u64,
    /// Share of the source's requests, in percent.
    pub share: f64,
    pub cross_network: bool,
    /// The polyline, from the source's side to the destination's side.
    pub points: Vec<(f64, f64)>,
    pub width: f64,
    pub badge: Badge,
}

/// A flow's numbered label on its arrow.
#[derive(Debug, Clone)]
pub struct Badge {
    pub rect: Rect,
    pub text: String,
}

/// Everything [`svg`] draws, with its geometry.
#[derive(Debug, Clone)]
pub struct Picture {
    pub width: f64,
    pub height: f64,
    /// (network, its box, its title's box).
    pub networks: Vec<(String, Rect, Rect)>,
    pub clusters: BTreeMap<String, Rect>,
    /// Cluster -> its east-west gateway's box (inside the cluster's).
    pub gateways: BTreeMap<String, Rect>,
    pub flows: Vec<Flow>,
    pub legend: Rect,
}

const MARGIN: f64 = 30.0;
const TITLE_H: f64 = 56.0;
const NET_PAD: f64 = 20.0;
const NET_TITLE_H: f64 = 36.0;
const CLUSTER_W: f64 = 240.0;
const LANE: f64 = 12.0;
const CORRIDOR_MARGIN: f64 = 44.0;
const GAP_MARGIN: f64 = 26.0;
const PORT: f64 = 16.0;
const UPPER_MIN: f64 = 64.0;
const GATEWAY_MIN: f64 = 32.0;
const BADGE_H: f64 = 18.0;
const LEGEND_ROW: f64 = 20.0;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Left,
    Right,
}

/// A flow before its geometry is known.
struct Plan {
    from: String,
    to: String,
    requests: u64,
    cross: bool,
    out_side: Side,
    in_side: Side,
    /// (vertical corridor index, lane) near the source, and near the destination
    /// when it differs.
    first: (usize, usize),
    last: Option<(usize, usize)>,
    /// (gap below row g, lane) when the flow crosses a column between.
    gap: Option<(usize, usize)>,
    out_port: usize,
    in_port: usize,
}

/// One flow's end on a cluster's side: (flow index, is incoming, crosses
/// networks, the other end's row).
type Port = (usize, bool, bool, usize);

fn network_of(m: &Matrix, c: &str) -> String {
    m.networks
        .get(c)
        .cloned()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "(no network)".into())
}

fn row_total(m: &Matrix, from: &str) -> u64 {
    m.flows
        .iter()
        .filter(|((a, _), _)| a == from)
        .map(|(_, n)| *n)
        .sum()
}

/// The geometry of the picture of `m`.
pub fn layout(m: &Matrix) -> Picture {
    // Columns: networks; rows: their clusters.
    let mut columns: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in m.clusters() {
        columns.entry(network_of(m, &c)).or_default().push(c);
    }
    let names: Vec<String> = columns.keys().cloned().collect();
    let cols: Vec<Vec<String>> = columns.into_values().collect();
    let ncols = cols.len();
    let nrows = cols.iter().map(Vec::len).max().unwrap_or(0);
    let cell: BTreeMap<String, (usize, usize)> = cols
        .iter()
        .enumerate()
        .flat_map(|(ci, cs)| {
            cs.iter()
                .enumerate()
                .map(move |(ri, c)| (c.clone(), (ci, ri)))
        })
        .collect();

    // Phase 1: sides, corridors, lanes, ports.
    let mut corridor_lanes = vec![0usize; ncols + 1];
    let mut gap_lanes = vec![0usize; nrows.max(1)];
    // (cluster, side) -> its ports.
    let mut ports: BTreeMap<(String, bool), Vec<Port>> = BTreeMap::new();
    let side_key = |s: Side| s == Side::Right;
    let mut plans: Vec<Plan> = Vec::new();
    for ((from, to), n) in &m.flows {
        if from == to || to == "none" {
            continue;
        }
        let (Some(&(c1, r1)), Some(&(c2, r2))) = (cell.get(from), cell.get(to)) else {
            continue;
        };
        let cross = m
            .cross
            .get(&(from.clone(), to.clone()))
            .copied()
            .unwrap_or(0)
            > 0;
        let mut lane = |k: usize| {
            corridor_lanes[k] += 1;
            (k, corridor_lanes[k] - 1)
        };
        let (out_side, in_side, first, last, gap) = if c2 == c1 {
            (Side::Right, Side::Right, lane(c1 + 1), None, None)
        } else if c2 > c1 {
            let first = lane(c1 + 1);
            if c2 == c1 + 1 {
                (Side::Right, Side::Left, first, None, None)
            } else {
                let g = r1.min(r2);
                gap_lanes[g] += 1;
                let last = lane(c2);
                (
                    Side::Right,
                    Side::Left,
                    first,
                    Some(last),
                    Some((g, gap_lanes[g] - 1)),
                )
            }
        } else {
            let first = lane(c1);
            if c1 == c2 + 1 {
                (Side::Left, Side::Right, first, None, None)
            } else {
                let g = r1.min(r2);
                gap_lanes[g] += 1;
                let last = lane(c2 + 1);
                (
                    Side::Left,
                    Side::Right,
                    first,
                    Some(last),
                    Some((g, gap_lanes[g] - 1)),
                )
            }
        };
        let i = plans.len();
        ports
            .entry((from.clone(), side_key(out_side)))
            .or_default()
            .push((i, false, false, r2));
        ports
            .entry((to.clone(), side_key(in_side)))
            .or_default()
            .push((i, true, cross, r1));
        plans.push(Plan {
            from: from.clone(),
            to: to.clone(),
            requests: *n,
            cross,
            out_side,
            in_side,
            first,
            last,
            gap,
            out_port: 0,
            in_port: 0,
        });
    }
    // Ports: the upper part for flows out and same-network flows in, the
    // gateway strip for cross-network flows in; ordered by the other end's
    // row so that arrows cross less.
    let mut upper_n: BTreeMap<String, usize> = BTreeMap::new();
    let mut gw_n: BTreeMap<String, usize> = BTreeMap::new();
    for ((cluster, _), list) in ports.iter_mut() {
        list.sort_by_key(|(i, incoming, cross, row)| (*incoming && *cross, *row, *incoming, *i));
        let mut up = 0;
        let mut gw = 0;
        for (i, incoming, cross, _) in list.iter() {
            let slot = if *incoming && *cross {
                gw += 1;
                gw - 1
            } else {
                up += 1;
                up - 1
            };
            if let Some(p) = plans.get_mut(*i) {
                if *incoming {
                    p.in_port = slot;
                } else {
                    p.out_port = slot;
                }
            }
        }
        let u = upper_n.entry(cluster.clone()).or_insert(0);
        *u = (*u).max(up);
        let g = gw_n.entry(cluster.clone()).or_insert(0);
        *g = (*g).max(gw);
    }
    let has_gateway = |c: &str| {
        gw_n.get(c).copied().unwrap_or(0) > 0 || m.gateways.get(c).is_some_and(|g| !g.is_empty())
    };
    let upper_h = |c: &str| UPPER_MIN.max(PORT * (upper_n.get(c).copied().unwrap_or(0) + 1) as f64);
    let gw_h = |c: &str| {
        if has_gateway(c) {
            GATEWAY_MIN.max(PORT * (gw_n.get(c).copied().unwrap_or(0) + 1) as f64)
        } else {
            0.0
        }
    };

    // Phase 2: geometry.
    let corridor_w = |k: usize| {
        if corridor_lanes[k] == 0 {
            if k == 0 || k == ncols {
                0.0
            } else {
                2.0 * CORRIDOR_MARGIN
            }
        } else {
            2.0 * CORRIDOR_MARGIN + (corridor_lanes[k] - 1) as f64 * LANE
        }
    };
    let col_w = CLUSTER_W + 2.0 * NET_PAD;
    let mut corridor_x = vec![0.0; ncols + 1];
    let mut col_x = vec![0.0; ncols];
    let mut x = MARGIN;
    for k in 0..=ncols {
        corridor_x[k] = x;
        x += corridor_w(k);
        if k < ncols {
            col_x[k] = x;
            x += col_w;
        }
    }
    let width = (x + MARGIN).max(720.0);
    // Rows: as tall as their tallest cluster.
    let row_h: Vec<f64> = (0..nrows)
        .map(|r| {
            cols.iter()
                .filter_map(|cs| cs.get(r))
                .map(|c| upper_h(c) + gw_h(c))
                .fold(UPPER_MIN, f64::max)
        })
        .collect();
    let gap_h = |g: usize| {
        let lanes = gap_lanes.get(g).copied().unwrap_or(0);
        (2.0 * GAP_MARGIN + lanes.saturating_sub(1) as f64 * LANE).max(2.0 * GAP_MARGIN)
    };
    let top = TITLE_H;
    let mut row_y = vec![0.0; nrows];
    let mut y = top + NET_TITLE_H;
    for r in 0..nrows {
        row_y[r] = y;
        y += row_h[r] + gap_h(r);
    }
    let net_bottom = y;
    let mut networks = Vec::new();
    let mut clusters = BTreeMap::new();
    let mut gateways = BTreeMap::new();
    for (ci, cs) in cols.iter().enumerate() {
        let nx = col_x[ci];
        networks.push((
            names[ci].clone(),
            Rect {
                x: nx,
                y: top,
                w: col_w,
                h: net_bottom - top,
            },
            Rect {
                x: nx + 8.0,
                y: top + 6.0,
                w: col_w - 16.0,
                h: 22.0,
            },
        ));
        for (ri, c) in cs.iter().enumerate() {
            let r = Rect {
                x: nx + NET_PAD,
                y: row_y[ri],
                w: CLUSTER_W,
                h: upper_h(c) + gw_h(c),
            };
            if has_gateway(c) {
                gateways.insert(
                    c.clone(),
                    Rect {
                        x: r.x + 10.0,
                        y: r.y + upper_h(c),
                        w: r.w - 20.0,
                        h: gw_h(c) - 6.0,
                    },
                );
            }
            clusters.insert(c.clone(), r);
        }
    }
    let lane_x = |(k, l): (usize, usize)| {
        let lanes = corridor_lanes[k].max(1) as f64;
        let w = corridor_w(k);
        corridor_x[k] + w / 2.0 - (lanes - 1.0) * LANE / 2.0 + l as f64 * LANE
    };
    let gap_y = |(g, l): (usize, usize)| {
        let lanes = gap_lanes.get(g).copied().unwrap_or(1).max(1) as f64;
        let start = row_y[g] + row_h[g];
        start + gap_h(g) / 2.0 - (lanes - 1.0) * LANE / 2.0 + l as f64 * LANE
    };
    let port_y_at = |c: &str, slot: usize, gateway: bool| -> f64 {
        let Some(r) = clusters.get(c) else { return 0.0 };
        if gateway {
            let n = gw_n.get(c).copied().unwrap_or(1).max(1) as f64;
            let g = gw_h(c) - 6.0;
            r.y + upper_h(c) + g * (slot as f64 + 1.0) / (n + 1.0)
        } else {
            let n = upper_n.get(c).copied().unwrap_or(1).max(1) as f64;
            r.y + upper_h(c) * (slot as f64 + 1.0) / (n + 1.0)
        }
    };
    // Left and right ports sit 4 px apart from each other's rows, so that two
    // boxes facing each other across a corridor never put stubs on one line.
    let port_y = |c: &str, slot: usize, gateway: bool, side: Side| -> f64 {
        let nudge = if side == Side::Left { 4.0 } else { -4.0 };
        port_y_at(c, slot, gateway) + nudge
    };
    let side_x = |c: &str, s: Side| {
        clusters
            .get(c)
            .map(|r| if s == Side::Right { r.x + r.w } else { r.x })
            .unwrap_or(0.0)
    };
    let max = plans.iter().map(|p| p.requests).max().unwrap_or(1).max(1) as f64;
    let mut flows: Vec<Flow> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let y1 = port_y(&p.from, p.out_port, false, p.out_side);
            let y2 = port_y(&p.to, p.in_port, p.cross, p.in_side);
            let x1 = side_x(&p.from, p.out_side);
            let x2 = side_x(&p.to, p.in_side);
            let a = lane_x(p.first);
            let mut points = vec![(x1, y1), (a, y1)];
            match (p.gap, p.last) {
                (Some(g), Some(last)) => {
                    let gy = gap_y(g);
                    let b = lane_x(last);
                    points.extend([(a, gy), (b, gy), (b, y2)]);
                }
                _ => points.push((a, y2)),
            }
            points.push((x2, y2));
            let share = p.requests as f64 * 100.0 / row_total(m, &p.from).max(1) as f64;
            Flow {
                number: i + 1,
                from: p.from.clone(),
                to: p.to.clone(),
                requests: p.requests,
                share,
                cross_network: p.cross,
                points,
                width: 2.0 + 4.0 * (p.requests as f64 / max),
                badge: Badge {
                    rect: Rect {
                        x: 0.0,
                        y: 0.0,
                        w: 0.0,
                        h: 0.0,
                    },
                    text: format!("{} · {share:.1}%", i + 1),
                },
            }
        })
        .collect();

    // Badges: on their own arrow, clear of boxes, titles and each other.
    let mut obstacles: Vec<Rect> = clusters.values().copied().collect();
    obstacles.extend(networks.iter().map(|(_, _, t)| *t));
    let mut placed: Vec<Rect> = Vec::new();
    for f in flows.iter_mut() {
        let w = 7.0 * f.badge.text.chars().count() as f64 + 12.0;
        let mut best = None;
        // Longest segments first; along each, the middle first.
        let mut segs: Vec<((f64, f64), (f64, f64))> =
            f.points.windows(2).map(|p| (p[0], p[1])).collect();
        segs.sort_by(|a, b| {
            let la = (a.0 .0 - a.1 .0).abs() + (a.0 .1 - a.1 .1).abs();
            let lb = (b.0 .0 - b.1 .0).abs() + (b.0 .1 - b.1 .1).abs();
            lb.total_cmp(&la)
        });
        'search: for (a, b) in &segs {
            for k in 0..=20 {
                // 0.5, 0.45, 0.55, 0.4, 0.6, ...
                let off = (k as f64 / 2.0).ceil() * 0.025 * if k % 2 == 0 { 1.0 } else { -1.0 };
                let t = 0.5 + off;
                if !(0.05..=0.95).contains(&t) {
                    continue;
                }
                let cx = a.0 + (b.0 - a.0) * t;
                let cy = a.1 + (b.1 - a.1) * t;
                let r = Rect {
                    x: cx - w / 2.0,
                    y: cy - BADGE_H / 2.0,
                    w,
                    h: BADGE_H,
                };
                let clear = |o: &Rect| {
                    !Rect {
                        x: o.x - 3.0,
                        y: o.y - 3.0,
                        w: o.w + 6.0,
                        h: o.h + 6.0,
                    }
                    .intersects(&r)
                };
                if obstacles.iter().all(clear) && placed.iter().all(clear) {
                    best = Some(r);
                    break 'search;
                }
            }
        }
        // Nowhere clear (not seen in practice): the middle of the longest segment.
        let r = best.unwrap_or_else(|| {
            let (a, b) = segs.first().copied().unwrap_or(((0.0, 0.0), (0.0, 0.0)));
            Rect {
                x: (a.0 + b.0) / 2.0 - w / 2.0,
                y: (a.1 + b.1) / 2.0 - BADGE_H / 2.0,
                w,
                h: BADGE_H,
            }
        });
        placed.push(r);
        f.badge.rect = r;
    }
    let unserved = m.flows.keys().any(|(_, b)| b == "none");
    let legend_rows = 4 + flows.len() + usize::from(unserved);
    let legend = Rect {
        x: MARGIN,
        y: net_bottom + 24.0,
        w: width - 2.0 * MARGIN,
        h: 16.0 + legend_rows as f64 * LEGEND_ROW,
    };
    Picture {
        width,
        height: legend.y + legend.h + MARGIN,
        networks,
        clusters,
        gateways,
        flows,
        legend,
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const CROSS: &str = "#e8710a";
const SAME: &str = "#333333";

/// The mesh as an SVG picture (see the module's documentation).
pub fn svg(m: &Matrix) -> String {
    let pic = layout(m);
    let mut s = String::new();
    let (w, h) = (pic.width, pic.height);
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="12" markerHeight="12" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{SAME}"/></marker>
<marker id="arrow-x" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="12" markerHeight="12" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{CROSS}"/></marker></defs>
<rect width="100%" height="100%" fill="white"/>
<text x="{MARGIN}" y="34" font-size="20" font-weight="bold">Cross-cluster traffic: {} requests, {} crossed networks ({:.1}%)</text>
"##,
        m.total,
        m.cross_network,
        if m.total > 0 {
            m.cross_network as f64 * 100.0 / m.total as f64
        } else {
            0.0
        }
    );
    for (name, r, t) in &pic.networks {
        let _ = writeln!(
            s,
            r##"<g class="network"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="14" fill="#f1f5fb" stroke="#8aa4c8" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" font-size="14" fill="#45658f">network {}</text></g>"##,
            r.x,
            r.y,
            r.w,
            r.h,
            t.x + 4.0,
            t.y + 16.0,
            esc(name)
        );
    }
    for (c, r) in &pic.clusters {
        let local = m.count(c, c);
        let out_total = row_total(m, c);
        let local_line = if out_total > 0 {
            format!(
                "stays here: {:.1}% ({local})",
                local as f64 * 100.0 / out_total as f64
            )
        } else {
            "serves only".to_string()
        };
        let _ = write!(
            s,
            r##"<g class="cluster"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="10" fill="#ffffff" stroke="#1a73e8" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="18" font-weight="bold" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="#555">{}</text>"##,
            r.x,
            r.y,
            r.w,
            r.h,
            r.x + r.w / 2.0,
            r.y + 26.0,
            esc(c),
            r.x + r.w / 2.0,
            r.y + 46.0,
            esc(&local_line)
        );
        if let Some(g) = pic.gateways.get(c) {
            let addrs: Vec<&String> = m.gateways.get(c).into_iter().flatten().collect();
            let label = match addrs.as_slice() {
                [] => "east-west gateway".to_string(),
                [one] => format!("east-west gateway {one}"),
                [one, rest @ ..] => format!("east-west gateway {one} (+{})", rest.len()),
            };
            let _ = write!(
                s,
                r##"<g class="gateway"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="6" fill="#fff4e5" stroke="{CROSS}"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#8a4b08">⇄ {}</text></g>"##,
                g.x,
                g.y,
                g.w,
                g.h,
                g.x + g.w / 2.0,
                g.y + g.h / 2.0 + 4.0,
                esc(&label)
            );
        }
        s.push_str("</g>\n");
    }
    // Every arrow first, then every badge: a badge drawn with its own arrow
    // would be crossed by the arrows drawn after it.
    let style = |cross: bool| {
        if cross {
            (CROSS, "arrow-x", r#" stroke-dasharray="10 6""#)
        } else {
            (SAME, "arrow", "")
        }
    };
    for f in &pic.flows {
        let (color, marker, dash) = style(f.cross_network);
        let points: Vec<String> = f
            .points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            s,
            r##"<g class="flow"><polyline points="{}" fill="none" stroke="{color}" stroke-width="{:.1}" stroke-linejoin="round"{dash} marker-end="url(#{marker})"/></g>"##,
            points.join(" "),
            f.width,
        );
    }
    for f in &pic.flows {
        let (color, _, _) = style(f.cross_network);
        let b = &f.badge.rect;
        let _ = writeln!(
            s,
            r##"<g class="badge"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="9" fill="white" stroke="{color}"/><text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="{color}">{}</text></g>"##,
            b.x,
            b.y,
            b.w,
            b.h,
            b.x + b.w / 2.0,
            b.y + 13.0,
            esc(&f.badge.text)
        );
    }
    // The legend: what the marks mean, then every flow by number.
    let l = &pic.legend;
    let _ = writeln!(
        s,
        r##"<g class="legend"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="8" fill="#fafafa" stroke="#bbb"/>"##,
        l.x, l.y, l.w, l.h
    );
    let x0 = l.x + 16.0;
    let mut y = l.y + 22.0;
    // A sample arrow (`style`: its stroke attributes, `marker`: its head) and
    // what it means, on one legend row.
    let sample = |s: &mut String, y: f64, style: &str, marker: &str, text: &str| {
        let _ = writeln!(
            s,
            r##"<line x1="{x0:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" {style} marker-end="url(#{marker})"/><text x="{:.1}" y="{:.1}" font-size="13">{text}</text>"##,
            y - 4.0,
            x0 + 50.0,
            y - 4.0,
            x0 + 64.0,
            y
        );
    };
    sample(
        &mut s,
        y,
        &format!(r#"stroke="{SAME}" stroke-width="3""#),
        "arrow",
        "same network: served directly",
    );
    y += LEGEND_ROW;
    sample(
        &mut s,
        y,
        &format!(r#"stroke="{CROSS}" stroke-width="3" stroke-dasharray="10 6""#),
        "arrow-x",
        "cross-network: through the serving cluster's east-west gateway (⇄, port 15443)",
    );
    y += LEGEND_ROW;
    let _ = writeln!(
        s,
        r##"<text x="{x0:.1}" y="{y:.1}" font-size="13">arrow width: requests; badge: flow number · share of the source cluster's requests; "stays here": served in the source cluster itself</text>"##
    );
    y += LEGEND_ROW;
    let _ = writeln!(
        s,
        r##"<text x="{x0:.1}" y="{y:.1}" font-size="13" font-weight="bold">flows</text>"##
    );
    for f in &pic.flows {
        y += LEGEND_ROW;
        let color = if f.cross_network { CROSS } else { SAME };
        let via = if f.cross_network {
            match m.gateways.get(&f.to).and_then(|g| g.iter().next()) {
                Some(g) => format!(", via gateway {g}"),
                None => String::new(),
            }
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            r##"<text x="{x0:.1}" y="{y:.1}" font-size="13" fill="{color}">{}  {} → {}: {:.1}% ({}){}{}</text>"##,
            f.number,
            esc(&f.from),
            esc(&f.to),
            f.share,
            f.requests,
            if f.cross_network {
                " cross-network"
            } else {
                ""
            },
            esc(&via)
        );
    }
    let unserved: u64 = m
        .flows
        .iter()
        .filter(|((_, b), _)| b == "none")
        .map(|(_, n)| *n)
        .sum();
    if unserved > 0 {
        y += LEGEND_ROW;
        let _ = writeln!(
            s,
            r##"<text x="{x0:.1}" y="{y:.1}" font-size="13" fill="#c5221f">{unserved} request(s) served by nobody (no healthy upstream, connection failures)</text>"##
        );
    }
    s.push_str("</g>\n</svg>\n");
    s
}
