# frozen_string_literal: true

# The Ruby side of test_recurring_ruby.py's turn-taking test: Rails enqueues recurring rows
# (delayed_cron_job's `cron`, the seed fork's `reoccur_in`) and a real Delayed::Worker with
# recurring.rb's plugins runs them, taking turns with a Python worker on the same table.
#
#   TZ=UTC ruby recurring_turns.rb enqueue --url URL --table TABLE --cron EXPR --every SECONDS
#   TZ=UTC ruby recurring_turns.rb work --url URL --table TABLE --work-off N
#
# Every run inserts (runner, job_id, slot = the row's run_at, started_at) into TABLE_turns,
# which the Python test creates; the Python handler writes the same.

require "json"
require "logger"
require "optparse"
require "active_record"
require "active_job"
require "delayed_job"
require "delayed_job_active_record"
require_relative "recurring"

opts = { work_off: 2 }
command = ARGV.shift
OptionParser.new do |o|
  o.on("--url URL") { |v| opts[:url] = v }
  o.on("--table TABLE") { |v| opts[:table] = v }
  o.on("--cron EXPR") { |v| opts[:cron] = v }
  o.on("--every SECONDS", Integer) { |v| opts[:every] = v }
  o.on("--work-off N", Integer) { |v| opts[:work_off] = v }
end.parse!(ARGV)

ActiveRecord::Base.default_timezone = :utc
ActiveRecord::Base.logger = nil
ActiveRecord::Migration.verbose = false
ActiveRecord::Base.establish_connection(opts.fetch(:url))
Delayed::Job.table_name = opts.fetch(:table)
Delayed::Job.reset_column_information
Delayed::Worker.logger = Logger.new($stderr).tap { |l| l.level = Logger::WARN }
TURNS = "#{opts.fetch(:table)}_turns"

RecurringTick = Struct.new(:kind) do
  def perform; end
end

# Who ran which slot: written before the job is invoked, as the Python handler does.
class TurnRecorder < Delayed::Plugin
  callbacks do |lifecycle|
    lifecycle.before(:invoke_job) do |job|
      conn = ActiveRecord::Base.connection
      conn.execute(
        "INSERT INTO #{TURNS} (runner, job_id, slot, started_at) VALUES ('ruby', #{job.id.to_i}, " \
        "#{conn.quote(job.run_at.utc)}, #{conn.quote(Time.now.utc)})"
      )
    end
  end
end

DjRecurring.add_columns!(opts.fetch(:table)) if command == "enqueue"
DjRecurring.install!

case command
when "enqueue"
  cron = Delayed::Job.enqueue(RecurringTick.new("cron"), cron: opts.fetch(:cron))
  every = DjRecurring.schedule(RecurringTick.new("every"), every: opts.fetch(:every))
  puts JSON.generate(cron: cron.id, every: every.id)
when "work"
  Delayed::Worker.plugins << TurnRecorder
  worker = Delayed::Worker.new(quiet: true, sleep_delay: 0.1)
  result = worker.work_off(opts.fetch(:work_off))
  Delayed::Job.clear_locks!(worker.name)
  puts JSON.generate(succeeded: result[0], failed: result[1], name: worker.name)
else
  abort("unknown command #{command}")
end
