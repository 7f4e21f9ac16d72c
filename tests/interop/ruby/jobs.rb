# frozen_string_literal: true

# The job classes of the pretend Rails app, as a Ruby delayed_job worker process knows them.
#
# Every job that performs inserts one row into the side table `job_runs` (JobRun), naming the
# job key, the runner ("ruby"), the worker (locked_by) and the attempts it saw, so a test can
# prove each job ran exactly once and by which side. Python handlers insert the same rows.
#
# Names that only Python runs (PyOnlyJob, PyNotifier.notify, Greeter#greet, PyActiveJob) are
# defined in python_jobs.rb, which the enqueuing "Rails app" loads and a Ruby worker does not:
# a Ruby worker that ever touched one would fail it (DeserializationError / NameError).

class JobRun < ActiveRecord::Base
end

module Harness
  # The delayed_jobs row being performed, captured by the lifecycle hook below.
  def self.current_job
    Thread.current[:harness_job]
  end

  def self.record(key, note = nil)
    job = current_job
    JobRun.create!(
      job_key: key.to_s,
      runner: "ruby",
      worker: job&.locked_by,
      job_id: job&.id,
      attempts: job&.attempts,
      note: note
    )
  end

  # A job that sleeps `seconds` and/or fails with "boom" when it runs on the side named by
  # `fail_on` ("ruby", "python", "both"), so one class can be flaky on either side.
  def self.perform_shared(key, fail_on, seconds)
    record(key)
    if seconds
      sleep(seconds.to_f)
      record(key, "done")
    end
    raise "boom" if %w[ruby both].include?(fail_on)
  end
end

# A plugin, because Delayed::Worker.new rebuilds the lifecycle from Delayed::Worker.plugins.
class HarnessPlugin < Delayed::Plugin
  callbacks do |lifecycle|
    lifecycle.around(:perform) do |worker, job, &block|
      Thread.current[:harness_job] = job
      begin
        block.call(worker, job)
      ensure
        Thread.current[:harness_job] = nil
      end
    end
  end
end
Delayed::Worker.plugins << HarnessPlugin

# Only Ruby runs these.
RubyOnlyJob = Struct.new(:key) do
  def perform
    Harness.record(key)
  end
end

class RubyMailer
  def self.deliver(key)
    Harness.record(key)
  end
end

class RubyActiveJob < ActiveJob::Base
  queue_as :ruby

  def perform(key)
    Harness.record(key)
  end
end

# Both sides have these.
SharedJob = Struct.new(:key, :fail_on, :seconds, :stubborn) do
  def perform
    Harness.perform_shared(key, fail_on, seconds)
  end
end

# The job Ruby and Python both fail the same way, for comparing what each writes.
FlakyJob = Struct.new(:key, :message) do
  def perform
    Harness.record(key)
    raise(message || "boom")
  end
end

# One attempt only, declared by the job (Ruby's payload-level max_attempts).
OneShotJob = Struct.new(:key, :message) do
  def perform
    Harness.record(key)
    raise(message || "boom")
  end

  def max_attempts
    1
  end
end
