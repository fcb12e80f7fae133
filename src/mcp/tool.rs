//! The tools by name: a call's name is parsed once into a [`Tool`], and the tool's [`Kind`] decides the path
//! the call takes. The schema list (`schema.rs`) is generated from [`Tool::ALL`], so a tool cannot be listed
//! without being dispatched, or the other way round.

/// One variant per tool. Names follow the seed's tools and Purple Flea's own MCP servers'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tool {
    CheckBalance,
    CheckEscrowStatus,
    GetEscrow,
    PayoutStatus,
    OpenFindings,
    RequestPayout,
    CreateEscrow,
    ReleaseEscrow,
    DisputeEscrow,
    MarkComplete,
    ClaimFaucet,
}

/// What a call of a tool becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Answered from the synced tables (or the provider, asked now); changes nothing.
    Read,
    /// An operation of the exactly-once engine: a row of the pending or actions table, run now or queued.
    Money,
    /// An act on the provider during the call (the faucet, an escrow's complete step), under the policy.
    Direct,
}

impl Tool {
    /// Every tool, in the order `tools/list` gives them.
    pub const ALL: [Tool; 11] = [
        Tool::CheckBalance,
        Tool::CheckEscrowStatus,
        Tool::GetEscrow,
        Tool::PayoutStatus,
        Tool::OpenFindings,
        Tool::RequestPayout,
        Tool::CreateEscrow,
        Tool::ReleaseEscrow,
        Tool::DisputeEscrow,
        Tool::MarkComplete,
        Tool::ClaimFaucet,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tool::CheckBalance => "check_balance",
            Tool::CheckEscrowStatus => "check_escrow_status",
            Tool::GetEscrow => "get_escrow",
            Tool::PayoutStatus => "payout_status",
            Tool::OpenFindings => "open_findings",
            Tool::RequestPayout => "request_payout",
            Tool::CreateEscrow => "create_escrow",
            Tool::ReleaseEscrow => "release_escrow",
            Tool::DisputeEscrow => "dispute_escrow",
            Tool::MarkComplete => "mark_complete",
            Tool::ClaimFaucet => "claim_faucet",
        }
    }

    pub fn parse(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn kind(self) -> Kind {
        match self {
            Tool::CheckBalance
            | Tool::CheckEscrowStatus
            | Tool::GetEscrow
            | Tool::PayoutStatus
            | Tool::OpenFindings => Kind::Read,
            Tool::RequestPayout | Tool::CreateEscrow | Tool::ReleaseEscrow | Tool::DisputeEscrow => Kind::Money,
            Tool::MarkComplete | Tool::ClaimFaucet => Kind::Direct,
        }
    }

    /// The tools a policy names: those that move money or change an escrow.
    pub fn governed(self) -> bool {
        self.kind() != Kind::Read
    }

    /// The scheduled `pfsync payouts` job can run a queued row of it (the faucet and the complete step are
    /// no operations of the engine: they run now or not at all).
    pub fn queueable(self) -> bool {
        self.kind() == Kind::Money
    }

    /// The names of the tools of one kind, in [`Tool::ALL`] order.
    pub fn names_of(kind: Kind) -> Vec<&'static str> {
        Tool::ALL.into_iter().filter(|t| t.kind() == kind).map(Tool::name).collect()
    }
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_parses_from_its_name_and_only_from_it() {
        for t in Tool::ALL {
            assert_eq!(Tool::parse(t.name()), Some(t));
        }
        assert_eq!(Tool::parse("Check_Balance"), None);
        assert_eq!(Tool::parse(""), None);
        let mut names: Vec<&str> = Tool::ALL.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Tool::ALL.len(), "names are unique");
    }
}
