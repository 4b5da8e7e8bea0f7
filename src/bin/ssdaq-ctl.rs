//! `ssdaq-ctl`: run control for a running `ssdaqd --control ENDPOINT`.
//!
//! Thin: sends one command (`ssdaq::ops::control` documents them) and
//! prints the reply. `status` prints a summary a person reads; `--json`
//! prints the reply as it came, for scripts.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ssdaq::listen::control::{self, Request, Value};

#[derive(Parser, Debug)]
#[command(
    name = "ssdaq-ctl",
    version,
    about = "Control a running ssdaqd: status, start-run [N], stop-run, set KEY VALUE, get settings",
    after_help = "Commands:\n  status            every figure (the same as http://METRICS/status)\n  \
                  start-run [N]     end the current run, start run N (default: the last + 1)\n  \
                  stop-run          end the current run; receive and count, record nothing\n  \
                  set KEY VALUE     a setting for the next run: timeout-ms, builder-timeout,\n                    \
                  window-ns, module-timeout, reorder-ns, modules\n  \
                  get settings      the settings now and for the next run\n\n\
                  Exit status: 0 done, 1 refused (the reason is printed), 2 bad usage, 3 no reply."
)]
struct Cli {
    /// ssdaqd's control endpoint (its --control).
    #[arg(
        long,
        short = 'c',
        value_name = "ENDPOINT",
        default_value = "tcp://127.0.0.1:5600"
    )]
    control: String,
    /// Seconds to wait for the reply.
    #[arg(long, value_name = "SECONDS", default_value = "6", value_parser = ssdaq::cli::seconds)]
    timeout: Duration,
    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,
    /// The command and its arguments.
    #[arg(required = true, num_args = 1.., value_name = "COMMAND")]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let req = Request {
        command: cli.command[0].clone(),
        args: cli.command[1..].to_vec(),
    };
    let reply = match control::request(&cli.control, &req, cli.timeout) {
        Ok(r) => r,
        Err(e) => {
            ssdaq::errln!("ssdaq-ctl: {e}");
            return ExitCode::from(3);
        }
    };
    if reply["ok"] != Value::Bool(true) {
        let why = reply["error"]
            .as_str()
            .unwrap_or("refused, without a reason");
        ssdaq::errln!("ssdaq-ctl: {} refused: {why}", req.command);
        return ExitCode::from(1);
    }
    let text = if cli.json {
        serde_json::to_string_pretty(&reply).unwrap_or_default()
    } else if req.command == "status" {
        human_status(&reply)
    } else {
        human(&reply)
    };
    let _ = {
        use std::io::Write as _;
        writeln!(std::io::stdout(), "{text}")
    };
    ExitCode::SUCCESS
}

/// A reply's fields, one per line.
fn human(v: &Value) -> String {
    let Some(m) = v.as_object() else {
        return v.to_string();
    };
    m.iter()
        .filter(|(k, _)| *k != "ok")
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `status`, as a person reads it.
fn human_status(v: &Value) -> String {
    let s = &v["stats"];
    let run = &v["run"];
    let mut out = vec![
        format!(
            "run {} {} ({} events) | up {:.0} s | {} receive",
            run["number"],
            run["state"].as_str().unwrap_or("?"),
            run["events"],
            v["uptime_s"].as_f64().unwrap_or(0.0),
            v["backend"].as_str().unwrap_or("?")
        ),
        format!(
            "received {} datagrams, kernel drops {}; events {} (complete {}); published {}, subscriber overflows {}",
            s["received"],
            s["kernel_drops"],
            s["events"],
            s["complete"],
            s["published"],
            s["hwm_overflows"]
        ),
        format!(
            "modules expected {} | waited {} | unhealthy {}",
            v["expected"].as_str().unwrap_or("-"),
            v["waited"].as_str().unwrap_or("-"),
            v["unhealthy"].as_str().unwrap_or("-")
        ),
    ];
    if let Some(d) = v["dump"].as_object() {
        out.push(format!(
            "dump {} | {} MB in {} file(s) | lost {}{}",
            d["path"].as_str().unwrap_or("(none: between runs)"),
            d["bytes"].as_u64().unwrap_or(0) >> 20,
            d["files"],
            d["lost"],
            if d["failed"] == true {
                " | STOPPED"
            } else {
                ""
            }
        ));
    }
    if let Some(mods) = v["modules"].as_array() {
        for m in mods.iter().filter(|m| m["healthy"] != true) {
            out.push(format!(
                "  module {}: {}{}{} last heard {:.1} s ago",
                m["module"],
                if m["silent"] == true { "SILENT " } else { "" },
                if m["off_timeline"] == true {
                    "OFF-TIMELINE "
                } else {
                    ""
                },
                if m["clock_offset"] == true {
                    "CLOCK-OFFSET "
                } else {
                    ""
                },
                m["last_heard_s"].as_f64().unwrap_or(f64::NAN)
            ));
        }
    }
    out.join("\n")
}
