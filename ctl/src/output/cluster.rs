//! `cluster status`: the summary line and the member table, or JSON.

use serde_json::{Value, json};

use super::fields::or_none;
use super::table::Table;

/// Renders the controller cluster's status as a summary line and a member table.
pub fn cluster_status(s: &shoal_proto::ClusterStatusResponse) -> String {
    let leader = if s.leader_id == 0 {
        "<none>".to_string()
    } else {
        s.leader_id.to_string()
    };
    let mut out = format!(
        "Leader: {leader}   Term: {}   Commit index: {}   Answered by: {}\n\n",
        s.term, s.commit_index, s.answered_by
    );
    let mut t = Table {
        headers: [
            "ID", "ADDRESS", "ROLE", "VOTER", "HEALTH", "TERM", "LAST LOG", "APPLIED", "MATCHED",
            "ERROR",
        ]
        .iter()
        .map(|h| h.to_string())
        .collect(),
        rows: vec![],
    };
    let mut members = s.members.clone();
    members.sort_by_key(|m| m.id);
    for m in &members {
        let role = if m.leader {
            "leader"
        } else if m.voter {
            "follower"
        } else {
            "learner"
        };
        t.rows.push(vec![
            m.id.to_string(),
            m.address.clone(),
            role.into(),
            if m.voter { "yes" } else { "no" }.into(),
            if m.healthy { "healthy" } else { "unhealthy" }.into(),
            m.term.to_string(),
            m.last_log_index.to_string(),
            m.last_applied.to_string(),
            m.matched_index.to_string(),
            or_none(Some(crate::error::one_line(&m.error))),
        ]);
    }
    out.push_str(&t.render(false));
    out
}

/// The controller cluster's status as a JSON value (for `-o json|yaml`).
pub fn cluster_status_json(s: &shoal_proto::ClusterStatusResponse) -> Value {
    let mut members = s.members.clone();
    members.sort_by_key(|m| m.id);
    json!({
        "leaderId": s.leader_id,
        "term": s.term,
        "commitIndex": s.commit_index,
        "answeredBy": s.answered_by,
        "members": members.iter().map(|m| json!({
            "id": m.id,
            "address": m.address,
            "leader": m.leader,
            "voter": m.voter,
            "healthy": m.healthy,
            "term": m.term,
            "lastLogIndex": m.last_log_index,
            "lastApplied": m.last_applied,
            "matchedIndex": m.matched_index,
            "error": m.error,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::output::testutil::*;

    #[test]
    fn cluster_status_table() {
        use shoal_proto::{ClusterStatusResponse, MemberStatus};
        let m = |id: u64, leader: bool, healthy: bool, error: &str| MemberStatus {
            id,
            address: format!("127.0.0.1:700{id}"),
            leader,
            healthy,
            term: 4,
            last_log_index: 42,
            last_applied: 42,
            matched_index: if healthy { 42 } else { 0 },
            error: error.into(),
            voter: true,
        };
        let s = ClusterStatusResponse {
            leader_id: 1,
            term: 4,
            commit_index: 42,
            members: vec![
                m(2, false, false, "connection refused"),
                m(1, true, true, ""),
            ],
            answered_by: 1,
            ..Default::default()
        };
        assert_eq!(
            cluster_status(&s),
            "Leader: 1   Term: 4   Commit index: 42   Answered by: 1\n\n\
             ID   ADDRESS          ROLE       VOTER   HEALTH      TERM   LAST LOG   APPLIED   MATCHED   ERROR\n\
             1    127.0.0.1:7001   leader     yes     healthy     4      42         42        42        <none>\n\
             2    127.0.0.1:7002   follower   yes     unhealthy   4      42         42        0         connection refused\n"
        );
        assert_eq!(
            cluster_status_json(&s)["members"][1]["error"],
            "connection refused"
        );
    }
}
