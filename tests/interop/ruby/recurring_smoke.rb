# frozen_string_literal: true

# Ruby only: a real Delayed::Worker with recurring.rb's plugins and Debian's Fugit runs
# recurring rows in SQLite and leaves them as delayed_cron_job 0.9.0 (and, for reoccur_in,
# dj_consumer's rule) says. Prints one line per check; exits 1 if any fails.
#
#   TZ=UTC ruby tests/interop/ruby/recurring_smoke.rb

ENV["TZ"] = "UTC"

require "erb"
require "logger"
require "active_record"
require "active_job"
require "delayed_job"
require "delayed_job_active_record"
require "active_job/queue_adapters/delayed_job_adapter"
require_relative "recurring"

ActiveRecord::Base.default_timezone = :utc
ActiveRecord::Base.logger = nil
ActiveRecord::Migration.verbose = false
ActiveRecord::Base.establish_connection(adapter: "sqlite3", database: ":memory:")
gem_dir = Gem::Specification.find_by_name("delayed_job_active_record").gem_dir
template = File.read(File.join(gem_dir, "lib/generators/delayed_job/templates/migration.rb"))
migration_version = "[#{ActiveRecord::VERSION::MAJOR}.#{ActiveRecord::VERSION::MINOR}]"
eval(ERB.new(template, trim_mode: "-").result(binding), TOPLEVEL_BINDING, "migration.rb") # rubocop:disable Security/Eval
CreateDelayedJobs.migrate(:up)
DjRecurring.add_columns!("delayed_jobs")

Delayed::Worker.logger = Logger.new(nil)
ActiveJob::Base.queue_adapter = :delayed_job
ActiveJob::Base.logger = Logger.new(nil)
DjRecurring.install!

RAN = []
TickJob = Struct.new(:key) do
  def perform
    RAN << key
  end
end
BoomJob = Struct.new(:key) do
  def perform
    raise "boom #{key}"
  end
end
SlowJob = Struct.new(:seconds) do
  def perform
    sleep(seconds)
  end
end
# Clears its own row's cron while it runs, as an admin would from a console.
ClearCronJob = Struct.new(:fail) do
  def perform
    Delayed::Job.where("handler LIKE ?", "%ClearCronJob%").update_all(cron: nil)
    raise "boom after clearing" if fail
  end
end

class CronActiveJob < ActiveJob::Base
  def perform(*args)
    RAN << ["aj", *args]
  end
end

$failures = 0 # rubocop:disable Style/GlobalVars

def check(label)
  ok = yield
  puts "#{ok ? 'ok  ' : 'FAIL'} #{label}"
  $failures += 1 unless ok # rubocop:disable Style/GlobalVars
rescue StandardError => e
  puts "FAIL #{label}: #{e.class}: #{e.message}"
  $failures += 1 # rubocop:disable Style/GlobalVars
end

# Run the one ready row with a fresh worker; other rows of a scenario are in the future.
def work(max_attempts: 25, max_run_time: 60, destroy_failed_jobs: true)
  Delayed::Worker.max_attempts = max_attempts
  Delayed::Worker.max_run_time = max_run_time
  Delayed::Worker.destroy_failed_jobs = destroy_failed_jobs
  Delayed::Worker.new(quiet: true).work_off(1)
end

def due!(job)
  job.update_column(:run_at, Time.now.utc - 60)
  job
end

def row(job)
  Delayed::Job.find_by(id: job.id)
end

def on_cron_grid?(row, cron, before)
  row.run_at > before && row.run_at == DjRecurring.next_cron_time(cron, row.run_at - 1)
end

def scenario(name)
  Delayed::Job.delete_all
  RAN.clear
  puts "-- #{name}"
  yield
end

scenario "enqueue with cron: run_at is Fugit's next time" do
  t0 = Time.now.utc
  job = Delayed::Job.enqueue(TickJob.new("a"), cron: "*/5 * * * *")
  check("cron stored") { row(job).cron == "*/5 * * * *" }
  check("run_at on the */5 grid, after now") do
    r = row(job)
    r.run_at > t0 && r.run_at <= t0 + 300 && (r.run_at.min % 5).zero? && r.run_at.sec.zero?
  end
end

scenario "success keeps the row: attempts + 1, unlocked, next time, last_error cleared" do
  job = due!(Delayed::Job.enqueue(TickJob.new("s"), cron: "* * * * * *"))
  job.update_columns(last_error: "old error", attempts: 4)
  created = row(job).created_at
  t0 = Time.now.utc
  check("work_off reports a success") { work == [1, 0] && RAN == ["s"] }
  r = row(job)
  check("same row, same created_at") { r && r.created_at == created }
  check("attempts 4 -> 5") { r.attempts == 5 }
  check("unlocked") { r.locked_by.nil? && r.locked_at.nil? }
  check("last_error cleared") { r.last_error.nil? }
  check("not failed") { r.failed_at.nil? }
  check("run_at = the next second after now") { on_cron_grid?(r, "* * * * * *", t0) && r.run_at <= Time.now.utc + 1 }
end

scenario "failure keeps the row too: attempts + 1, last_error, next time, not failed" do
  job = due!(Delayed::Job.enqueue(BoomJob.new("f"), cron: "0 * * * *"))
  t0 = Time.now.utc
  check("work_off reports a failure") { work == [0, 1] }
  r = row(job)
  check("attempts 1, last_error the error") { r.attempts == 1 && r.last_error.start_with?("boom f\n") }
  check("run_at the next hour, unlocked, not failed") do
    on_cron_grid?(r, "0 * * * *", t0) && r.locked_by.nil? && r.failed_at.nil?
  end
end

scenario "max attempts never fails a cron row" do
  job = Delayed::Job.enqueue(BoomJob.new("m"), cron: "0 * * * *")
  3.times do
    due!(job)
    work(max_attempts: 2)
  end
  check("3 failed runs with max_attempts 2: still there, attempts 3, not failed") do
    r = row(job)
    r && r.attempts == 3 && r.failed_at.nil?
  end
end

scenario "a timeout is a failure like any other" do
  job = due!(Delayed::Job.enqueue(SlowJob.new(3), cron: "0 * * * *"))
  check("work_off reports a failure") { work(max_run_time: 1) == [0, 1] }
  r = row(job)
  check("last_error says execution expired, row rescheduled") do
    r.last_error.start_with?("execution expired") && r.attempts == 1 && r.run_at > Time.now.utc
  end
end

scenario "cron cleared while the job ran: the row is deleted" do
  job = due!(Delayed::Job.enqueue(ClearCronJob.new(false), cron: "0 * * * *"))
  work
  check("deleted after a success") { row(job).nil? }
  job = due!(Delayed::Job.enqueue(ClearCronJob.new(true), cron: "0 * * * *"))
  work
  check("deleted after a failure") { row(job).nil? }
end

scenario "a handler that cannot be loaded is not rescheduled" do
  handler = "--- !ruby/object:NoSuchJobClass\nkey: x\n"
  job = due!(Delayed::Job.create!(handler: handler, cron: "0 * * * *"))
  work(destroy_failed_jobs: true)
  check("destroy_failed_jobs: deleted") { row(job).nil? }
  job = due!(Delayed::Job.create!(handler: handler, cron: "0 * * * *"))
  work(destroy_failed_jobs: false)
  r = row(job)
  check("kept failed: failed_at set (and, as 0.9.0 does, attempts + 1 and a next run_at)") do
    r.failed_at && r.attempts == 1 && r.last_error.include?("Job failed to load") && r.run_at > Time.now.utc
  end
end

scenario "ActiveJob: MyJob.set(cron:).perform_later" do
  aj = CronActiveJob.set(cron: "0 * * * *").perform_later(7)
  r = Delayed::Job.find(aj.provider_job_id)
  check("cron and queue stored, handler is the JobWrapper") do
    r.cron == "0 * * * *" && r.queue == "default" &&
      r.handler.start_with?("--- !ruby/object:ActiveJob::QueueAdapters::DelayedJobAdapter::JobWrapper") &&
      r.handler.include?("job_class: CronActiveJob")
  end
  check("run_at the next hour") { r.run_at.min.zero? && r.run_at.sec.zero? && r.run_at > Time.now.utc }
  due!(r)
  work
  check("it runs and stays") { RAN == [["aj", 7]] && row(r).attempts == 1 && row(r).run_at > Time.now.utc }
  plain = CronActiveJob.perform_later(8)
  check("without cron: an ordinary row") { Delayed::Job.find(plain.provider_job_id).cron.nil? }
end

scenario "seed fork: Delayed::Job.schedule(job, every: 3.hours)" do
  t0 = Time.now.utc
  job = DjRecurring.schedule(TickJob.new("r"), every: 3.hours)
  r = row(job)
  check("reoccur_in \"10800\", run_at now, priority 0, no queue") do
    r.reoccur_in == "10800" && r.run_at.between?(t0 - 1, Time.now.utc + 1) && r.priority.zero? && r.queue.nil?
  end
  check("reoccur_in: 5.minutes -> \"300\"") { DjRecurring.schedule(TickJob.new("x"), reoccur_in: 5.minutes).reoccur_in == "300" }
  check("every: :last_of_month stored by name") do
    DjRecurring.schedule(TickJob.new("y"), every: :last_of_month).reoccur_in == "last_of_month"
  end
end

scenario "reoccur_in success: whole intervals past now, attempts 0, last_error cleared" do
  job = DjRecurring.schedule(TickJob.new("w"), every: 3.hours)
  slot = Time.now.utc.change(usec: 0) - (2.5 * 3600)
  job.update_columns(run_at: slot, attempts: 2, last_error: "old")
  t0 = Time.now.utc
  check("work_off reports a success") { work == [1, 0] && RAN == ["w"] }
  r = row(job)
  check("run_at = old slot + 3h (the first slot after now)") { r.run_at == slot + 3.hours }
  check("last_run_at = now, attempts 0, last_error NULL, unlocked") do
    r.last_run_at.between?(t0 - 1, Time.now.utc + 1) && r.attempts.zero? && r.last_error.nil? && r.locked_by.nil?
  end
end

scenario "reoccur_in failure: delayed_job's normal retry" do
  job = due!(DjRecurring.schedule(BoomJob.new("n"), every: 3.hours))
  t0 = Time.now.utc
  work
  r = row(job)
  check("attempts 1, run_at now + 1**4 + 5 s, last_error, reoccur_in kept") do
    r.attempts == 1 && r.run_at.between?(t0 + 5, Time.now.utc + 7) && r.last_error.start_with?("boom n") &&
      r.reoccur_in == "10800" && r.last_run_at.nil?
  end
end

puts($failures.zero? ? "all recurring checks passed" : "#{$failures} recurring checks FAILED") # rubocop:disable Style/GlobalVars
exit($failures.zero? ? 0 : 1) # rubocop:disable Style/GlobalVars
