//! Process grouping: matchers on comm, exe and cmdline with a name template, first match
//! wins, in the spirit of process-exporter's config.
//!
//! - `comm`: regexes matched against the whole command name; any one may match.
//! - `exe`: regexes matched against the whole executable path or its base name; any one.
//! - `cmdline`: regexes searched in the space-joined command line; all must match.
//!
//! Every field that is set must match. Named captures of the matching regexes can be used
//! in the name template, next to `{comm}`, `{exe_base}`, `{exe}` and `{user}`.

use regex::Regex;

use crate::config::{ProcessConfig, ProcessGroup};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Comm,
    ExeBase,
    ExeFull,
    User,
    Capture(String),
}

/// A parsed group name template such as `{comm}` or `pg-{cluster}`.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    fn parse(text: &str, captures: &[String]) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in template {text:?}"))?;
            let var = &after[..close];
            parts.push(match var {
                "comm" => Part::Comm,
                "exe_base" => Part::ExeBase,
                "exe" => Part::ExeFull,
                "user" => Part::User,
                v if captures.iter().any(|c| c == v) => Part::Capture(v.to_string()),
                v => {
                    return Err(format!(
                        "unknown placeholder {{{v}}} (use comm, exe_base, exe, user or a named capture of this group's regexes)"
                    ));
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("empty group name".into());
        }
        Ok(Self { parts })
    }

    /// Whether rendering needs the user name (looked up only then).
    pub fn needs_user(&self) -> bool {
        self.parts.contains(&Part::User)
    }

    fn needs_captures(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Capture(_)))
    }
}

/// What a matcher looks at.
#[derive(Debug, Clone, Copy)]
pub struct ProcView<'a> {
    /// Command name from stat.
    pub comm: &'a str,
    /// Executable path (empty when unreadable).
    pub exe: &'a str,
    /// Space-joined command line (empty for kernel threads).
    pub cmdline: &'a str,
}

fn base_name(exe: &str) -> &str {
    exe.rsplit('/').next().unwrap_or(exe)
}

/// One compiled group matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    name: Template,
    comm: Vec<Regex>,
    exe: Vec<Regex>,
    cmdline: Vec<Regex>,
}

impl Matcher {
    fn compile(g: &ProcessGroup, key: &str) -> Result<Self, (String, String)> {
        let anchored = |field: &str, list: &[String]| -> Result<Vec<Regex>, (String, String)> {
            list.iter()
                .enumerate()
                .map(|(i, re)| {
                    Regex::new(&format!("^(?:{re})$"))
                        .map_err(|e| (format!("{key}.{field}[{i}]"), e.to_string()))
                })
                .collect()
        };
        let comm = anchored("comm", &g.comm)?;
        let exe = anchored("exe", &g.exe)?;
        let cmdline = g
            .cmdline
            .iter()
            .enumerate()
            .map(|(i, re)| {
                Regex::new(re).map_err(|e| (format!("{key}.cmdline[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let captures: Vec<String> = comm
            .iter()
            .chain(&exe)
            .chain(&cmdline)
            .flat_map(|r| r.capture_names().flatten().map(str::to_string))
            .collect();
        let name = Template::parse(&g.name, &captures).map_err(|e| (format!("{key}.name"), e))?;
        Ok(Self {
            name,
            comm,
            exe,
            cmdline,
        })
    }

    /// The group name for a process, or `None` when this matcher does not take it.
    pub fn group(&self, p: &ProcView<'_>, user: &dyn Fn() -> String) -> Option<String> {
        if self.comm.is_empty() && self.exe.is_empty() && self.cmdline.is_empty() {
            return None;
        }
        let want = self.name.needs_captures();
        let mut caps: Vec<(String, String)> = Vec::new();
        let mut take = |re: &Regex, hay: &str| -> bool {
            if !want {
                return re.is_match(hay);
            }
            match re.captures(hay) {
                Some(c) => {
                    for name in re.capture_names().flatten() {
                        if let Some(m) = c.name(name) {
                            caps.push((name.to_string(), m.as_str().to_string()));
                        }
                    }
                    true
                }
                None => false,
            }
        };
        if !self.comm.is_empty() && !self.comm.iter().any(|r| take(r, p.comm)) {
            return None;
        }
        if !self.exe.is_empty()
            && !self
                .exe
                .iter()
                .any(|r| take(r, p.exe) || take(r, base_name(p.exe)))
        {
            return None;
        }
        if !self.cmdline.iter().all(|r| take(r, p.cmdline)) {
            return None;
        }
        let mut out = String::new();
        for part in &self.name.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Comm => out.push_str(p.comm),
                Part::ExeBase => out.push_str(base_name(p.exe)),
                Part::ExeFull => out.push_str(p.exe),
                Part::User => out.push_str(&user()),
                Part::Capture(n) => {
                    if let Some((_, v)) = caps.iter().find(|(k, _)| k == n) {
                        out.push_str(v);
                    }
                }
            }
        }
        Some(out)
    }

    /// Whether the name template uses `{user}`.
    pub fn needs_user(&self) -> bool {
        self.name.needs_user()
    }
}

/// The ordered matchers of a config.
#[derive(Debug, Clone, Default)]
pub struct Matchers(Vec<Matcher>);

impl Matchers {
    /// Compiles every group; an error names the key (`exporter.process.groups[2].cmdline[0]`)
    /// and the reason.
    pub fn compile(cfg: &ProcessConfig) -> Result<Self, (String, String)> {
        cfg.groups
            .iter()
            .enumerate()
            .map(|(i, g)| Matcher::compile(g, &format!("exporter.process.groups[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// The first matching group's name.
    pub fn group(&self, p: &ProcView<'_>, user: &dyn Fn() -> String) -> Option<String> {
        self.0.iter().find_map(|m| m.group(p, user))
    }

    /// Whether any template uses `{user}`.
    pub fn needs_user(&self) -> bool {
        self.0.iter().any(Matcher::needs_user)
    }

    /// Whether no group is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, comm: &[&str], exe: &[&str], cmdline: &[&str]) -> ProcessGroup {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        ProcessGroup {
            name: name.into(),
            comm: v(comm),
            exe: v(exe),
            cmdline: v(cmdline),
        }
    }

    fn matchers(groups: Vec<ProcessGroup>) -> Matchers {
        Matchers::compile(&ProcessConfig {
            groups,
            ..ProcessConfig::default()
        })
        .expect("compiles")
    }

    const PG: ProcView<'static> = ProcView {
        comm: "postgres",
        exe: "/usr/lib/postgresql/15/bin/postgres",
        cmdline: "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main",
    };

    #[test]
    fn first_match_wins_and_templates_render() {
        let m = matchers(vec![
            group("db-{ver}", &[], &[], &[r"postgresql/(?P<ver>\d+)/bin"]),
            group("{comm}", &[], &[], &[".+"]),
        ]);
        let nobody = || "nobody".to_string();
        assert_eq!(m.group(&PG, &nobody).as_deref(), Some("db-15"));
        let sleep = ProcView {
            comm: "sleep",
            exe: "/usr/bin/sleep",
            cmdline: "sleep 100",
        };
        assert_eq!(m.group(&sleep, &nobody).as_deref(), Some("sleep"));
        let kthread = ProcView {
            comm: "kworker/0:1",
            exe: "",
            cmdline: "",
        };
        assert_eq!(
            m.group(&kthread, &nobody),
            None,
            "kernel threads have no cmdline"
        );
    }

    #[test]
    fn comm_and_exe_are_anchored() {
        let m = matchers(vec![group(
            "{exe_base}:{user}",
            &["postgres"],
            &["postgres"],
            &[],
        )]);
        let user = || "postgres".to_string();
        assert_eq!(m.group(&PG, &user).as_deref(), Some("postgres:postgres"));
        let other = ProcView {
            comm: "postgres_fdw",
            ..PG
        };
        assert_eq!(m.group(&other, &user), None);
    }

    #[test]
    fn bad_regex_and_placeholder_name_the_key() {
        let bad = ProcessConfig {
            groups: vec![group("x", &[], &[], &["ok", "("])],
            ..ProcessConfig::default()
        };
        let (key, _) = Matchers::compile(&bad).expect_err("bad regex");
        assert_eq!(key, "exporter.process.groups[0].cmdline[1]");
        let bad = ProcessConfig {
            groups: vec![group("{nope}", &[], &[], &[".+"])],
            ..ProcessConfig::default()
        };
        let (key, reason) = Matchers::compile(&bad).expect_err("bad placeholder");
        assert_eq!(key, "exporter.process.groups[0].name");
        assert!(reason.contains("{nope}"), "{reason}");
    }
}
