//! The figures a benchmark measured, each against its target. A bench prints them into its section
//! of docs/benchmarks.md as a table ("met" or "not yet", and what limits a figure that is not), and
//! as one HTML comment each, which `cargo xtask bench` gathers into docs/benchmarks.json so that
//! two runs can be compared by a program.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::paths;

/// What a figure should be.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// Lower is better: met when below this.
    Below(f64),
    /// Higher is better: met when at least this.
    AtLeast(f64),
}

/// One measured figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
    /// Whether the goal is met (none without a goal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
    /// What limits the figure, where its goal is not met (or where it was measured with a caveat).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub limit: String,
}

const MARK: &str = "<!-- figure ";

impl Figure {
    /// A figure with no goal (context for the others), kept to two decimals.
    pub fn new(name: &str, value: f64, unit: &str) -> Figure {
        Figure {
            name: name.to_owned(),
            value: (value * 100.0).round() / 100.0,
            unit: unit.to_owned(),
            goal: None,
            met: None,
            limit: String::new(),
        }
    }

    /// The figure against `goal`.
    pub fn against(mut self, goal: Goal) -> Figure {
        self.met = Some(match goal {
            Goal::Below(bound) => self.value < bound,
            Goal::AtLeast(bound) => self.value >= bound,
        });
        self.goal = Some(goal);
        self
    }

    /// What limits it.
    pub fn limited_by(mut self, limit: &str) -> Figure {
        self.limit = limit.to_owned();
        self
    }

    fn shown(&self, value: f64) -> String {
        let digits = if value.abs() >= 100.0 || value.fract() == 0.0 {
            0
        } else {
            1
        };
        format!("{value:.digits$} {}", self.unit)
            .trim_end()
            .to_owned()
    }
}

/// The figures as a markdown table, each followed by its comment for docs/benchmarks.json.
pub fn table(figures: &[Figure]) -> String {
    let mut out =
        String::from("| figure | measured | target | | what limits it |\n|---|---:|---|---|---|\n");
    for figure in figures {
        let target = match figure.goal {
            Some(Goal::Below(bound)) => format!("< {}", figure.shown(bound)),
            Some(Goal::AtLeast(bound)) => format!(">= {}", figure.shown(bound)),
            None => String::new(),
        };
        let verdict = match figure.met {
            Some(true) => "met",
            Some(false) => "not yet",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {target} | {verdict} | {} |\n",
            figure.name,
            figure.shown(figure.value),
            figure.limit
        ));
    }
    for figure in figures {
        let json = serde_json::to_string(figure).unwrap_or_default();
        out.push_str(&format!("{MARK}{} -->\n", json.replace("--", "- -")));
    }
    out
}

/// The figures in a section's text.
pub fn read(section: &str) -> Vec<Figure> {
    section
        .lines()
        .filter_map(|line| line.strip_prefix(MARK)?.strip_suffix(" -->"))
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect()
}

/// One benchmark's entry in docs/benchmarks.json.
#[derive(Debug, Serialize, Deserialize)]
pub struct Run {
    pub date: String,
    pub machine: String,
    pub figures: Vec<Figure>,
}

/// Records `name`'s figures in docs/benchmarks.json (replacing its last run's).
pub fn record(name: &str, figures: Vec<Figure>) -> Result<()> {
    let path = paths::root().join("docs/benchmarks.json");
    let mut runs: BTreeMap<String, Run> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    runs.insert(
        name.to_owned(),
        Run {
            date: crate::bench::today(),
            machine: crate::bench::machine(),
            figures,
        },
    );
    let text = serde_json::to_string_pretty(&runs)? + "\n";
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_says_met_or_not_yet_and_round_trips() {
        let figures = vec![
            Figure::new("catch-up", 7_703.4, "events/s")
                .against(Goal::AtLeast(10_000.0))
                .limited_by("one workerd thread"),
            Figure::new("fan-out p99", 41.2, "ms").against(Goal::Below(50.0)),
            Figure::new("pages", 9_500.0, ""),
        ];
        let text = table(&figures);
        assert!(
            text.contains(
                "| catch-up | 7703 events/s | >= 10000 events/s | not yet | one workerd thread |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| fan-out p99 | 41.2 ms | < 50 ms | met |  |"),
            "{text}"
        );
        assert!(text.contains("| pages | 9500 |  |  |  |"), "{text}");
        assert_eq!(read(&text), figures);
    }
}
