//! The conformance suite: every rule of the Store API, written once and run against
//! every backend (`conformance_suite!(make_harness)` in a backend's tests).
//!
//! A backend supplies a [`Harness`]: a fresh, empty store per test, plus two things only
//! the backend can do: edit an event behind the store's back (to prove `verify` catches
//! it) and close and reopen the store (to prove the chain continues).
//!
//! The cases live one file per area, named after the core module whose rules they check
//! ([`append`], [`commit`], [`checkpoint`], [`read`], [`event`], [`snapshot`], [`chain`],
//! [`streams`], [`subscription`], [`projection`], [`trigger`], [`group`], [`lease`]),
//! each case an async function named as the behaviour it checks; [`fixtures`] holds what
//! they share. The macros below name each case by its area, so a test's name is the
//! case's name whatever file it lives in.

pub mod append;
pub mod chain;
pub mod checkpoint;
pub mod commit;
pub mod event;
pub mod fixtures;
pub mod group;
pub mod lease;
pub mod model;
pub mod privacy;
pub mod projection;
pub mod read;
pub mod snapshot;
pub mod streams;
pub mod subscription;
pub mod trigger;
pub mod workloads;

use crate::store::Store;
use async_trait::async_trait;

/// What a backend gives the suite.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// The backend's store.
    type Store: Store + Clone + 'static;
    /// The store under test (fresh and empty at the start of each test).
    fn store(&self) -> &Self::Store;
    /// Replaces the `data` of the event at `position` in the database, bypassing annal.
    async fn tamper_data(&self, position: u64, data: &str);
    /// Closes the store and opens it again on the same data.
    async fn reopen(&mut self);
}

/// Instantiates the whole conformance suite as tests, given a path to an
/// `async fn() -> impl Harness` that returns a fresh harness.
///
/// `conformance_suite!(make, skip_unless = ready)` makes each test return at once (after
/// `ready`, a `fn() -> bool`, has said why, e.g. on stderr) when `ready()` is false: for
/// backends that need a server the environment may not provide.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@all $make; {});
    };
    ($make:path, skip_unless = $ready:path) => {
        $crate::conformance_suite!(@all $make; {
            if !$ready() {
                return;
            }
        });
    };
    (@all $make:path; $guard:block) => {
        $crate::conformance_suite!(@cases $make; $guard;
            append::appends_get_contiguous_positions_and_versions,
            append::store_fills_in_defaults,
            append::data_and_metadata_come_back_byte_for_byte,
            append::expected_version_is_checked_for_every_variant,
            append::conflicting_append_writes_nothing,
            append::appending_with_another_aggregate_type_is_rejected,
            append::retried_append_with_same_event_ids_writes_nothing_again,
            append::reused_event_id_with_different_content_is_rejected,
            append::batch_with_one_invalid_event_writes_nothing,
            append::bad_input_gets_typed_errors_and_writes_nothing,
            append::transaction_commits_appends_and_checkpoint_together,
            append::transaction_with_one_conflict_writes_nothing,
            checkpoint::checkpoint_conflict_writes_nothing,
            checkpoint::a_checkpoint_of_another_log_commits_with_the_events_that_came_from_it,
            checkpoint::checkpoints_keep_status_and_errors,
            read::aggregate_reads_page_forwards_and_backwards,
            read::read_all_filters_by_every_field,
            read::aggregate_id_prefix_reads_only_the_ids_that_start_with_it,
            read::counts_by_event_type_match_a_read_of_the_same_filter,
            read::events_are_found_by_id,
            read::head_tracks_last_position_overall_and_by_aggregate_type,
            snapshot::snapshots_load_latest_at_or_below_for_their_tag,
            chain::verify_accepts_an_intact_chain_whole_and_by_range,
            chain::verify_of_a_range_past_the_head_is_invalid_not_broken,
            chain::verify_detects_an_event_edited_behind_the_store,
            chain::a_digest_proves_its_prefix_and_catches_a_cut_tail_or_a_rewrite,
            chain::a_tampered_event_is_never_served,
            chain::chain_and_positions_continue_after_reopen,
            commit::sixteen_writers_racing_on_one_aggregate_win_each_version_once,
            read::eight_writers_while_a_reader_tails_see_every_position_once_in_order,
            commit::a_conflict_does_not_fail_appends_committed_with_it,
            read::streaming_reads_page_through_the_whole_log,
            event::recorded_at_never_decreases_with_position,
            read::wait_for_head_wakes_on_commit,
        );
        #[test]
        fn random_operation_sequences_match_an_in_memory_model() {
            $guard
            $crate::testkit::model::check(|| $make());
        }
    };
    (@cases $make:path; $guard:block; $($area:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $guard
                $crate::testkit::$area::$case($make().await).await;
            }
        )*
    };
}

/// Instantiates the stream-rule cases ([`streams`]) as tests, like
/// [`conformance_suite!`]: for backends whose writer keeps stream records (not for a
/// client of a server, whose stream routes are tested with the server). With them, the
/// principal filter's case: only a backend records the principal an append names.
#[macro_export]
macro_rules! stream_suite {
    ($make:path) => {
        $crate::stream_suite!(@all $make; {});
    };
    ($make:path, skip_unless = $ready:path) => {
        $crate::stream_suite!(@all $make; {
            if !$ready() {
                return;
            }
        });
    };
    (@all $make:path; $guard:block) => {
        $crate::conformance_suite!(@cases $make; $guard;
            streams::stream_records_match_what_the_events_say,
            streams::the_store_refuses_appends_to_a_tombstoned_stream,
            streams::a_soft_deleted_stream_written_again_shows_only_its_new_events,
            streams::a_stream_append_without_a_type_takes_the_streams_own_or_its_category,
            read::principal_filter_reads_what_a_principal_appended,
        );
    };
}

/// Instantiates the personal-data cases ([`privacy`]) as tests, like
/// [`conformance_suite!`], given a maker of a [`privacy::PrivacyHarness`] whose store
/// was opened with [`privacy::kek`].
#[macro_export]
macro_rules! privacy_suite {
    ($make:path) => {
        $crate::privacy_suite!(@all $make; {});
    };
    ($make:path, skip_unless = $ready:path) => {
        $crate::privacy_suite!(@all $make; {
            if !$ready() {
                return;
            }
        });
    };
    (@all $make:path; $guard:block) => {
        $crate::conformance_suite!(@cases $make; $guard;
            privacy::personal_data_round_trips_byte_for_byte_and_is_stored_sealed,
            privacy::a_forgotten_subject_reads_as_erased_and_the_chain_still_verifies,
            privacy::an_event_about_two_subjects_is_erased_when_either_is_forgotten,
            privacy::forgetting_deletes_the_snapshots_holding_the_subjects_data,
            privacy::a_projection_rebuilt_after_erasure_sees_markers,
            privacy::a_wrong_or_missing_kek_is_refused_at_open,
            privacy::a_store_without_a_kek_refuses_personal_data,
            privacy::rotating_the_kek_rewraps_keys_without_rewriting_events,
            privacy::a_process_whose_kek_was_rotated_away_makes_no_key_under_the_old_one,
            privacy::a_process_without_a_kek_is_told_to_restart_with_one_not_that_data_is_corrupt,
            privacy::a_store_opened_without_its_kek_verifies_and_opens_no_personal_part,
            privacy::appends_racing_kek_rotations_all_succeed_under_one_kek,
            privacy::appends_racing_a_forgetting_leave_none_readable,
            privacy::a_subjects_events_export_decrypted_in_order,
            privacy::a_retried_personal_append_writes_nothing_again,
            privacy::the_record_of_forgettings_is_written_by_forgetting_only,
            privacy::imported_key_rows_are_taken_once_and_only_under_the_stores_kek,
            privacy::bad_personal_input_gets_typed_errors_and_writes_nothing,
        );
    };
}

/// Instantiates the subscription cases ([`subscription`], [`projection`], [`trigger`],
/// [`group`], [`lease`]) as tests, like [`conformance_suite!`], with the same
/// optional `skip_unless = ready`.
#[macro_export]
macro_rules! subscription_suite {
    ($make:path) => {
        $crate::subscription_suite!(@all $make; {});
    };
    ($make:path, skip_unless = $ready:path) => {
        $crate::subscription_suite!(@all $make; {
            if !$ready() {
                return;
            }
        });
    };
    (@all $make:path; $guard:block) => {
        $crate::conformance_suite!(@cases $make; $guard;
            subscription::a_subscription_delivers_history_then_live_without_gap_or_duplicate,
            subscription::filters_and_an_aggregate_id_prefix_choose_events_and_the_position_reaches_the_head,
            subscription::eight_concurrent_writers_and_a_subscriber_that_sees_the_total_order,
            subscription::a_consumer_that_does_not_read_never_makes_writers_wait,
            projection::a_killed_consumer_restarts_from_its_checkpoint_missing_nothing,
            projection::a_handler_failing_every_third_call_handles_every_event_once_in_order,
            projection::an_event_that_keeps_failing_faults_the_projection_or_is_skipped_by_policy,
            projection::a_rebuild_under_live_load_replays_everything_then_goes_live,
            projection::lag_is_the_head_minus_the_checkpoint_for_every_listed_projection,
            projection::waiting_for_a_projection_to_catch_up_covers_what_was_committed_before,
            trigger::a_trigger_reacts_once_with_causation_and_correlation,
            group::a_consumer_group_of_three_keeps_each_aggregate_in_order_when_a_member_leaves,
            lease::partition_leases_are_exclusive_and_change_hands_with_a_higher_token,
            group::a_group_of_three_members_with_one_leaving_and_one_crashing_loses_nothing,
        );
    };
}
