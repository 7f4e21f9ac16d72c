# frozen_string_literal: true

# Recurring rows, written and run as Ruby does, for the interop suite (issue 15).
#
# Our own small reimplementation, written from reading the sources (docs/recurring.md cites
# them line by line), of:
#
# * delayed_cron_job 0.9.0: a `cron` string column. Delayed::Job.enqueue(job, cron: "...")
#   and ActiveJob's MyJob.set(cron: "...").perform_later write it, and saving a row whose
#   cron changed sets run_at to Fugit's next time after now. Its worker plugin keeps the row
#   after every run, success or failure alike: attempts + 1, unlocked, run_at = the next time
#   after now, last_error = NULL or the run's error; it never fails the row for max attempts;
#   a row whose cron was cleared while it ran is deleted instead.
# * the seed fork's Delayed::Job.schedule(job, every: 3.hours): `reoccur_in` holds whole
#   seconds as a string ("10800"), run_at defaults to now.
# * dj_consumer's rule for a `reoccur_in` row after a success (not the fork's, see
#   docs/recurring.md), as a Ruby plugin so a Ruby worker can take turns with a Python one:
#   run_at advanced by whole intervals past now, last_run_at = now, attempts 0, last_error
#   NULL, unlocked. A failure takes delayed_job's normal retry path.
#
#   require_relative "recurring"
#   DjRecurring.add_columns!("delayed_jobs")  # cron, reoccur_in, last_run_at (if missing)
#   DjRecurring.install!                      # before Delayed::Worker.new
#
# A cron without a zone suffix is evaluated by Fugit in this process's zone: run with TZ=UTC.

require "fugit"

module DjRecurring
  FORK_RULES = %w[first_of_month last_of_month first_of_year last_of_year].freeze

  module_function

  def add_columns!(table)
    connection = ActiveRecord::Base.connection
    connection.add_column(table, :cron, :string) unless connection.column_exists?(table, :cron)
    connection.add_column(table, :reoccur_in, :string) unless connection.column_exists?(table, :reoccur_in)
    connection.add_column(table, :last_run_at, :datetime) unless connection.column_exists?(table, :last_run_at)
    Delayed::Job.reset_column_information
  end

  def install!
    Delayed::Job.include(RowMethods) unless Delayed::Job < RowMethods
    [CronPlugin, ReoccurPlugin].each { |p| Delayed::Worker.plugins << p unless Delayed::Worker.plugins.include?(p) }
    return unless defined?(::ActiveJob)

    ::ActiveJob::Base.include(ActiveJobCron) unless ::ActiveJob::Base < ActiveJobCron
    adapter = ::ActiveJob::QueueAdapters::DelayedJobAdapter
    adapter.prepend(AdapterCron) unless adapter < AdapterCron
  end

  # What delayed_cron_job writes for run_at: Fugit's next time after db_time_now.
  def next_cron_time(cron, now = Delayed::Job.db_time_now)
    Fugit::Cron.do_parse(cron).next_time(now).to_local_time
  end

  def cron?(job)
    job.respond_to?(:cron) && job.cron.present?
  end

  def reoccur?(job)
    !cron?(job) && job.respond_to?(:reoccur_in) && job.reoccur_in.present?
  end

  # The seed fork's Delayed::Job.schedule, on today's delayed_job: every: (or reoccur_in:)
  # stored as whole seconds in a string, or one of the fork's calendar rules by name.
  def schedule(payload, attributes = {})
    attributes = { payload_object: payload, priority: 0 }.merge(attributes)
    every = attributes.key?(:every) ? attributes.delete(:every) : attributes[:reoccur_in]
    attributes[:reoccur_in] = FORK_RULES.include?(every.to_s) ? every.to_s : every.to_i.to_s
    Delayed::Job.create!(attributes)
  end

  # dj_consumer's next slot: run_at + k * interval, k >= 1, strictly after now.
  def next_reoccurrence(run_at, seconds, now)
    steps = [1, ((now.to_r - run_at.to_r) / seconds).floor + 1].max
    run_at + (steps * seconds)
  end

  module RowMethods
    def self.included(base)
      base.before_save(:set_cron_run_at, if: :cron_changed?)
      base.attr_accessor(:kept_after_run)
    end

    def set_cron_run_at
      self.run_at = DjRecurring.next_cron_time(cron) if cron.present?
    end

    # delayed_job destroys a row after a successful run; a recurring row stays.
    def destroy
      kept_after_run ? self : super
    end
  end

  class CronPlugin < Delayed::Plugin
    callbacks do |lifecycle|
      lifecycle.before(:perform) { |_worker, job| job.last_error = nil if DjRecurring.cron?(job) }
      lifecycle.after(:invoke_job) { |job| job.kept_after_run = true if DjRecurring.cron?(job) }

      # A failed run is recorded, not rescheduled: the after-perform step does that.
      lifecycle.around(:error) do |worker, job, &block|
        next block.call(worker, job) unless DjRecurring.cron?(job)

        job.error = $! # the exception Delayed::Worker#run is rescuing
        worker.job_say(job, "FAILED with #{job.error.class.name}: #{job.error.message}", "error")
      end

      lifecycle.after(:perform) do |_worker, job|
        next unless DjRecurring.cron?(job) && !job.destroyed?

        job.cron = job.class.where(id: job.id).pluck(:cron).first # cleared while it ran?
        if job.cron.present?
          job.attempts += 1
          job.unlock
          job.set_cron_run_at
          job.save!
        else
          job.kept_after_run = false
          job.destroy
        end
      end
    end
  end

  class ReoccurPlugin < Delayed::Plugin
    callbacks do |lifecycle|
      lifecycle.after(:invoke_job) { |job| job.kept_after_run = true if DjRecurring.reoccur?(job) }
      lifecycle.after(:perform) do |_worker, job|
        next unless job.kept_after_run && DjRecurring.reoccur?(job) && !job.destroyed?

        interval = job.reoccur_in.to_s.strip
        if interval.match?(/\A\d+\z/) && interval.to_i.positive?
          now = Delayed::Job.db_time_now
          job.run_at = DjRecurring.next_reoccurrence(job.run_at, interval.to_i, now)
          job.last_run_at = now
          job.attempts = 0
          job.last_error = nil
          job.unlock
          job.save!
        else # not an interval this helper knows: what the fork would do is no guide
          job.kept_after_run = false
          job.destroy
        end
      end
    end
  end

  # MyJob.set(cron: "...").perform_later: the job carries `cron` to the adapter.
  module ActiveJobCron
    def self.included(base)
      base.attr_accessor(:cron)
    end

    def enqueue(options = {})
      self.cron = options[:cron] if options[:cron]
      super
    end
  end

  # The delayed_job adapter with the job's cron passed to Delayed::Job.enqueue.
  module AdapterCron
    def enqueue(job)
      enqueue_at(job, nil)
    end

    def enqueue_at(job, timestamp)
      options = { queue: job.queue_name, cron: job.cron }
      options[:run_at] = Time.at(timestamp) if timestamp
      options[:priority] = job.priority if job.respond_to?(:priority)
      wrapper = ::ActiveJob::QueueAdapters::DelayedJobAdapter::JobWrapper.new(job.serialize)
      Delayed::Job.enqueue(wrapper, options).tap { |row| job.provider_job_id = row.id }
    end
  end
end
