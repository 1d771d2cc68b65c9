//! The stage and time window a page shows, as the user chose them in the overview's form.

use std::fmt::Write;

use super::{Params, WebError, param, url_part};
use crate::read::filter;
use crate::store::Window;

/// The windows the overview offers.
pub const WINDOWS: [&str; 4] = ["5m", "1h", "24h", "custom"];

/// The overview's selection: stage and window, as the user chose them.
pub struct Selection {
    pub stage: String,
    pub window: String,
    pub since: String,
    pub until: String,
    /// `all`, `broken`, `groups`, or empty: all for small graphs, the broken part for large ones.
    pub view: String,
    /// A service to draw the neighbourhood of, instead.
    pub focus: String,
    /// In the `groups` view, the groups drawn service by service (comma-separated).
    pub expand: String,
}

impl Selection {
    pub fn of(q: &Params) -> Selection {
        let window = param(q, "window");
        Selection {
            stage: param(q, "stage").to_string(),
            window: if WINDOWS.contains(&window) {
                window.to_string()
            } else {
                "1h".to_string()
            },
            since: param(q, "since").to_string(),
            until: param(q, "until").to_string(),
            view: match param(q, "view") {
                v @ ("all" | "broken" | "groups") => v.to_string(),
                _ => String::new(),
            },
            focus: param(q, "focus").to_string(),
            expand: param(q, "expand").to_string(),
        }
    }

    /// The same stage and window, shown another way.
    pub fn with(&self, view: &str, focus: &str, expand: &str) -> Selection {
        Selection {
            stage: self.stage.clone(),
            window: self.window.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            view: view.to_string(),
            focus: focus.to_string(),
            expand: expand.to_string(),
        }
    }

    /// Only the stage and window: what the pages an overview links to keep.
    pub fn base_query(&self) -> String {
        self.with("", "", "").query()
    }

    pub fn query(&self) -> String {
        let mut q = format!("window={}", url_part(&self.window));
        for (k, v) in [
            ("stage", &self.stage),
            ("since", &self.since),
            ("until", &self.until),
            ("view", &self.view),
            ("focus", &self.focus),
            ("expand", &self.expand),
        ] {
            if !v.is_empty() {
                let _ = write!(q, "&{k}={}", url_part(v));
            }
        }
        q
    }

    pub fn window(&self) -> Result<(Window, String), WebError> {
        if self.window != "custom" {
            let d = humantime::parse_duration(&self.window).expect("a listed window");
            let since = crate::wall_ms().saturating_sub(d.as_millis() as u64);
            return Ok((
                Window {
                    since_ms: Some(since),
                    until_ms: None,
                },
                format!("last {}", self.window),
            ));
        }
        let w = filter::window(self)?;
        Ok((
            w,
            format!(
                "from {} to {}",
                if self.since.is_empty() {
                    "the start"
                } else {
                    &self.since
                },
                if self.until.is_empty() {
                    "now"
                } else {
                    &self.until
                }
            ),
        ))
    }
}

/// A custom window's `since` and `until`, read as everywhere else.
impl filter::Params for Selection {
    fn get(&self, name: &str) -> Option<&str> {
        let v = match name {
            "since" => &self.since,
            "until" => &self.until,
            _ => return None,
        };
        (!v.is_empty()).then_some(v.as_str())
    }
}
