//! Resolving an image or manifest `user` (`name`, `uid`, `uid:gid`,
//! `name:group`) against the container's `/etc/passwd` and `/etc/group` (pure).

use serde::{Deserialize, Serialize};

/// Numeric identity a container process runs as.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIds {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Home directory (for `HOME`).
    pub home: String,
}

impl UserIds {
    /// Adds supplementary groups (`supplementalGroups`, `fsGroup`), keeping the list
    /// sorted and without the primary group or duplicates.
    pub fn add_groups(&mut self, extra: &[u32]) {
        self.groups.extend(extra.iter().filter(|g| **g != self.gid));
        self.groups.sort_unstable();
        self.groups.dedup();
    }
}

/// Resolves `spec` using the contents of the container's passwd and group
/// files (empty strings if absent). Empty `spec` means root.
pub fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<UserIds, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok(UserIds {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: "/root".into(),
        });
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let pw: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let gr: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let entry = match u.parse::<u32>() {
        Ok(uid) => pw.iter().find(|f| f[2].parse::<u32>().ok() == Some(uid)),
        Err(_) => pw.iter().find(|f| f[0] == u),
    };
    let (uid, name, mut gid, home) = match (u.parse::<u32>(), entry) {
        (Ok(uid), Some(f)) => (uid, Some(f[0]), f[3].parse().unwrap_or(0), f[5].to_string()),
        (Ok(uid), None) => (uid, None, 0, "/".to_string()),
        (Err(_), Some(f)) => {
            let uid = f[2]
                .parse()
                .map_err(|_| format!("user {u:?}: bad uid in /etc/passwd"))?;
            (uid, Some(f[0]), f[3].parse().unwrap_or(0), f[5].to_string())
        }
        (Err(_), None) => {
            return Err(format!(
                "user {u:?} not found in the container's /etc/passwd"
            ));
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => gr
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("group {g:?} not found in the container's /etc/group"))?,
        };
    }
    let mut groups: Vec<u32> = match name {
        Some(n) => gr
            .iter()
            .filter(|f| f[3].split(',').any(|m| m == n))
            .filter_map(|f| f[2].parse().ok())
            .collect(),
        None => Vec::new(),
    };
    groups.retain(|x| *x != gid);
    groups.sort_unstable();
    groups.dedup();
    Ok(UserIds {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:u:/home/user:/bin/sh\n";
    const GR: &str = "root:x:0:\nuser:x:1000:\nwheel:x:10:user\n";

    #[test]
    fn resolves() {
        assert_eq!(resolve_user("", PW, GR).unwrap().uid, 0);
        let u = resolve_user("user", PW, GR).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups.clone(), u.home.as_str()),
            (1000, 1000, vec![10], "/home/user")
        );
        let u = resolve_user("1000:wheel", PW, GR).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
        let u = resolve_user("4242:4343", "", "").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 4343));
        assert!(resolve_user("nobody", PW, GR).is_err());
        assert!(resolve_user("user:nogroup", PW, GR).is_err());
        let mut u = resolve_user("user", PW, GR).unwrap();
        u.add_groups(&[2000, 1000, 10, 5]);
        assert_eq!(
            u.groups,
            vec![5, 10, 2000],
            "sorted, no primary group, no duplicates"
        );
    }
}
