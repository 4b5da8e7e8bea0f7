//! Stop signals as an operator, `timeout` or systemd deliver them (issue 11):
//! a doubled signal is one stop with its summary, SIGHUP is no death.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_stop_signal_delivered_twice_at_once_is_one_clean_stop_with_its_summary() {
    // Before: the second SIGINT (a process group under `timeout`) made
    // ssdaqd exit 1 at once with no summary, 3 times in 6.
    let d = Ssdaqd::start(&[]);
    d.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(20));
    d.signal(libc::SIGINT);
    let (status, log) = d.finish();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("the same stop"), "{log}");
    assert!(log.contains("stats: "), "the summary is printed: {log}");
}

#[test]
fn sighup_is_logged_and_the_run_goes_on() {
    // Before: SIGHUP killed the daemon (status 129), no line, no summary.
    let mut d = Ssdaqd::start(&[]);
    d.signal(libc::SIGHUP);
    d.wait_for("SIGHUP ignored");
    std::thread::sleep(Duration::from_millis(100));
    let cam = Camera::new(2, d.port);
    for f in 0..3 {
        cam.send(0, f);
        cam.send(1, f);
    }
    std::thread::sleep(Duration::from_millis(200));
    let s = d.stop_stats();
    assert_eq!(s["received"], 6, "still receiving after SIGHUP: {s:?}");
}
